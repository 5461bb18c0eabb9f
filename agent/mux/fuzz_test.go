package mux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func FuzzParseHeader(f *testing.F) {
	f.Add(frames(header{typ: typeWindowUpdate, flags: flagSYN, streamID: 1, length: 5}))
	f.Add(frames(header{typ: typeGoAway, length: goAwayProtocol}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < headerSize {
			return
		}
		raw := [headerSize]byte(b[:headerSize])
		h, err := parseHeader(raw)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("parse error %v is not a protocol error", err)
			}
			return
		}
		if h.encode() != raw {
			t.Fatalf("header %v re-encodes to %x, parsed from %x", h, h.encode(), raw)
		}
	})
}

// fuzzConn yields fixed bytes to the session and discards what it writes.
type fuzzConn struct {
	r *bytes.Reader
}

func (c *fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *fuzzConn) Close() error                     { return nil }
func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// halfSink takes half of what it is given.
type halfSink struct{}

func (halfSink) TryWrite(p []byte) int { return len(p) / 2 }

// frames concatenates encoded frames; a data frame's body is its length
// in bytes.
func frames(hs ...header) []byte {
	var out []byte
	for _, h := range hs {
		e := h.encode()
		out = append(out, e[:]...)
		if h.typ == typeData {
			out = append(out, make([]byte, h.length)...)
		}
	}
	return out
}

// FuzzSession feeds arbitrary bytes to a server session: it must end
// without panicking, and hold no more than its bounds, whether or not
// the application reads.
func FuzzSession(f *testing.F) {
	f.Add(frames(header{typ: typeWindowUpdate, flags: flagSYN, streamID: 1}, header{typ: typeData, streamID: 1, length: 10}, header{typ: typeWindowUpdate, flags: flagFIN, streamID: 1}), true)
	f.Add(frames(header{typ: typeData, flags: flagSYN, streamID: 3, length: 4}, header{typ: typePing, flags: flagSYN, length: 7}, header{typ: typeWindowUpdate, flags: flagRST, streamID: 3}), false)
	f.Add(frames(header{typ: typeWindowUpdate, flags: flagSYN, streamID: 1}, header{typ: typeData, streamID: 1, length: initialWindow + 1}), false)
	f.Add(frames(header{typ: typeWindowUpdate, flags: flagSYN, streamID: 1}, header{typ: typeWindowUpdate, streamID: 1, length: 1 << 31}, header{typ: typeWindowUpdate, streamID: 1, length: 1 << 31}), true)
	f.Add(frames(header{typ: typeGoAway, length: goAwayNormal}, header{typ: typeData, streamID: 9, length: 3}), true)
	f.Fuzz(func(t *testing.T, input []byte, read bool) {
		cfg := Config{AcceptBacklog: 4, MaxStreams: 8}
		s, err := Server(&fuzzConn{r: bytes.NewReader(input)}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if read {
			go func() {
				for {
					st, err := s.AcceptStream()
					if err != nil {
						return
					}
					// Small frames go half to a sink while the reader
					// waits, as a flow's socket takes what fits.
					st.SetSink(halfSink{})
					go func() {
						_, _ = io.Copy(io.Discard, st)
						_ = st.Close()
					}()
				}
			}()
		}
		select {
		case <-s.CloseChan():
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end when its input did")
		}
		<-s.recvDone
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.streams) > s.cfg.MaxStreams {
			t.Fatalf("%d streams open, bound %d", len(s.streams), s.cfg.MaxStreams)
		}
		for id, st := range s.streams {
			st.mu.Lock()
			held, window := st.heldLocked(), st.recvWindow
			st.mu.Unlock()
			if held > s.cfg.StreamWindow || uint64(held)+uint64(window) > uint64(s.cfg.StreamWindow) {
				t.Fatalf("stream %d holds %d bytes with %d of window open, window %d", id, held, window, s.cfg.StreamWindow)
			}
		}
	})
}
