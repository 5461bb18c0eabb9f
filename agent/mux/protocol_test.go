package mux

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// rawPeer is the far end of a session driven frame by frame.
type rawPeer struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// newRawServer returns a server session whose peer the test plays by
// hand over loopback TCP.
func newRawServer(t *testing.T, cfg Config) (*Session, *rawPeer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Server(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		peer.Close()
	})
	return s, &rawPeer{t: t, conn: peer, br: bufio.NewReader(peer)}
}

func (p *rawPeer) send(h header, body []byte) {
	p.t.Helper()
	e := h.encode()
	_ = p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.conn.Write(append(e[:], body...)); err != nil {
		p.t.Fatalf("send %v: %v", h, err)
	}
}

// next returns the next frame the session sent (skipping data bodies).
func (p *rawPeer) next() header {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [headerSize]byte
	if _, err := io.ReadFull(p.br, b[:]); err != nil {
		p.t.Fatalf("read frame from session: %v", err)
	}
	h, err := parseHeader(b)
	if err != nil {
		p.t.Fatal(err)
	}
	if h.typ == typeData {
		_, _ = p.br.Discard(int(h.length))
	}
	return h
}

func waitClosed(t *testing.T, s *Session) error {
	t.Helper()
	select {
	case <-s.CloseChan():
		return s.Err()
	case <-time.After(10 * time.Second):
		t.Fatal("session still open")
		return nil
	}
}

func TestPingIsAnswered(t *testing.T) {
	_, p := newRawServer(t, Config{})
	p.send(header{typ: typePing, flags: flagSYN, length: 0xabcd}, nil)
	if h := p.next(); h.typ != typePing || h.flags != flagACK || h.length != 0xabcd {
		t.Fatalf("answer to ping = %v, want ping ACK 0xabcd", h)
	}
}

func TestDataBeyondWindowEndsSession(t *testing.T) {
	s, p := newRawServer(t, Config{})
	p.send(header{typ: typeWindowUpdate, flags: flagSYN, streamID: 1}, nil)
	p.send(header{typ: typeData, streamID: 1, length: initialWindow + 1}, make([]byte, initialWindow+1))
	if h := p.next(); h.typ != typeGoAway || h.length != goAwayProtocol {
		t.Fatalf("frame after overrun = %v, want go-away protocol error", h)
	}
	if err := waitClosed(t, s); !errors.Is(err, ErrProtocol) {
		t.Fatalf("session error %v, want a protocol error", err)
	}
}

func TestStreamOfOwnParityEndsSession(t *testing.T) {
	s, p := newRawServer(t, Config{})
	p.send(header{typ: typeWindowUpdate, flags: flagSYN, streamID: 2}, nil)
	if err := waitClosed(t, s); !errors.Is(err, ErrProtocol) {
		t.Fatalf("session error %v, want a protocol error", err)
	}
}

func TestBacklogOverflowIsReset(t *testing.T) {
	s, p := newRawServer(t, Config{AcceptBacklog: 2})
	for id := uint32(1); id <= 5; id += 2 {
		p.send(header{typ: typeWindowUpdate, flags: flagSYN, streamID: id}, nil)
	}
	if h := p.next(); h.flags != flagRST || h.streamID != 5 {
		t.Fatalf("frame for the stream beyond the backlog = %v, want RST of stream 5", h)
	}
	if n := s.NumStreams(); n != 2 {
		t.Fatalf("%d streams held, want the backlog's 2", n)
	}
	// Late data for the refused stream is dropped, not an error.
	p.send(header{typ: typeData, streamID: 5, length: 3}, []byte("abc"))
	p.send(header{typ: typePing, flags: flagSYN, length: 1}, nil)
	if h := p.next(); h.typ != typePing {
		t.Fatalf("after data for a refused stream: %v, want the ping answer", h)
	}
}

func TestIdleStreamHoldsNoChunk(t *testing.T) {
	s, p := newRawServer(t, Config{})
	p.send(header{typ: typeData, flags: flagSYN, streamID: 1, length: 5}, []byte("hello"))
	st, err := s.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if h := p.next(); h.flags != flagACK {
		t.Fatalf("accept sent %v, want ACK", h)
	}
	buf := make([]byte, 16)
	if n, err := io.ReadAtLeast(st, buf, 5); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.recv.chunks) != 0 {
		t.Fatalf("stream keeps %d chunks after reading everything", len(st.recv.chunks))
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	_, err := Client(&fuzzConn{}, Config{StreamWindow: 1000})
	if err == nil || !strings.Contains(err.Error(), "StreamWindow 1000") {
		t.Fatalf("error %v, want one naming StreamWindow 1000", err)
	}
}

func TestRemoteGoAwayStopsOpens(t *testing.T) {
	s, p := newRawServer(t, Config{})
	p.send(header{typ: typeGoAway, length: goAwayNormal}, nil)
	// The go-away is handled before the ping that follows it is answered.
	p.send(header{typ: typePing, flags: flagSYN, length: 2}, nil)
	if h := p.next(); h.typ != typePing {
		t.Fatalf("got %v, want the ping answer", h)
	}
	if _, err := s.OpenStream(); !errors.Is(err, ErrRemoteGoAway) {
		t.Fatalf("open after go-away: %v, want ErrRemoteGoAway", err)
	}
	if s.IsClosed() {
		t.Fatal("a normal go-away closed the session")
	}
}

func TestUnansweredKeepaliveEndsSession(t *testing.T) {
	s, p := newRawServer(t, Config{KeepAliveInterval: 10 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	if h := p.next(); h.typ != typePing || h.flags != flagSYN {
		t.Fatalf("first frame %v, want a keepalive ping", h)
	}
	// The test never answers.
	if err := waitClosed(t, s); !errors.Is(err, ErrKeepAliveTimeout) {
		t.Fatalf("session error %v, want ErrKeepAliveTimeout", err)
	}
}

func TestAnsweredKeepaliveKeepsSession(t *testing.T) {
	s, p := newRawServer(t, Config{KeepAliveInterval: 10 * time.Millisecond, PingTimeout: 5 * time.Second})
	for range 5 {
		h := p.next()
		if h.typ != typePing || h.flags != flagSYN {
			t.Fatalf("frame %v, want a keepalive ping", h)
		}
		p.send(header{typ: typePing, flags: flagACK, length: h.length}, nil)
	}
	if s.IsClosed() {
		t.Fatalf("session ended although every ping was answered: %v", s.Err())
	}
}

// TestEmptyReadWaitsForData: Read(nil) is how the agent waits for a
// stream's readiness without a buffer; it must block, then leave the data.
func TestEmptyReadWaitsForData(t *testing.T) {
	s, p := newRawServer(t, Config{})
	p.send(header{typ: typeWindowUpdate, flags: flagSYN, streamID: 1}, nil)
	st, err := s.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	returned := make(chan error, 1)
	go func() {
		_, err := st.Read(nil)
		returned <- err
	}()
	select {
	case err := <-returned:
		t.Fatalf("Read(nil) returned %v before any data", err)
	case <-time.After(50 * time.Millisecond):
	}
	p.send(header{typ: typeData, streamID: 1, length: 2}, []byte("hi"))
	if err := <-returned; err != nil {
		t.Fatalf("Read(nil) after data: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("data after Read(nil) = %q, %v", buf, err)
	}
	p.send(header{typ: typeWindowUpdate, flags: flagFIN, streamID: 1}, nil)
	if _, err := st.Read(nil); err != io.EOF {
		t.Fatalf("Read(nil) after FIN: %v, want EOF", err)
	}
}

// blockedWrite opens stream 1 from the peer and starts a Write larger
// than the initial window, which the peer never opens further.
func blockedWrite(t *testing.T, s *Session, p *rawPeer) (*Stream, chan error) {
	t.Helper()
	p.send(header{typ: typeWindowUpdate, flags: flagSYN, streamID: 1}, nil)
	st, err := s.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := st.Write(make([]byte, initialWindow+1))
		done <- err
	}()
	// The ACK, then data up to the window: the writer is now waiting.
	var got uint32
	for got < initialWindow {
		if h := p.next(); h.typ == typeData {
			got += h.length
		}
	}
	return st, done
}

func TestResetWakesBlockedWrite(t *testing.T) {
	s, p := newRawServer(t, Config{})
	_, done := blockedWrite(t, s, p)
	p.send(header{typ: typeWindowUpdate, flags: flagRST, streamID: 1}, nil)
	if err := <-done; !errors.Is(err, ErrConnectionReset) {
		t.Fatalf("write on a reset stream: %v, want ErrConnectionReset", err)
	}
}

func TestCloseWakesBlockedWrite(t *testing.T) {
	s, p := newRawServer(t, Config{})
	st, done := blockedWrite(t, s, p)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("write on a closed stream: %v, want ErrStreamClosed", err)
	}
	if h := p.next(); h.flags&flagFIN == 0 {
		t.Fatalf("after Close: %v, want FIN", h)
	}
}

// TestOnReadable: an idle reader parked in OnReadable is called for data,
// FIN, reset and the session's end, and no more once it stopped.
func TestOnReadable(t *testing.T) {
	accept := func(t *testing.T, s *Session, p *rawPeer, id uint32) (*Stream, chan struct{}, func()) {
		t.Helper()
		p.send(header{typ: typeWindowUpdate, flags: flagSYN, streamID: id}, nil)
		st, err := s.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		if h := p.next(); h.flags != flagACK {
			t.Fatalf("accept sent %v, want ACK", h)
		}
		calls := make(chan struct{}, 16)
		stop := st.OnReadable(func() { calls <- struct{}{} })
		if st.Readable() {
			t.Fatal("a new stream is readable")
		}
		return st, calls, stop
	}
	called := func(t *testing.T, calls chan struct{}, what string) {
		t.Helper()
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("no callback for %s", what)
		}
	}
	t.Run("data then FIN", func(t *testing.T) {
		s, p := newRawServer(t, Config{})
		st, calls, _ := accept(t, s, p, 1)
		p.send(header{typ: typeData, streamID: 1, length: 2}, []byte("hi"))
		called(t, calls, "data")
		if !st.Readable() {
			t.Fatal("not readable after data")
		}
		buf := make([]byte, 8)
		if n, err := st.Read(buf); err != nil || string(buf[:n]) != "hi" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		if st.Readable() {
			t.Fatal("readable after reading everything")
		}
		p.send(header{typ: typeWindowUpdate, flags: flagFIN, streamID: 1}, nil)
		called(t, calls, "FIN")
		if _, err := st.Read(buf); !st.Readable() || err != io.EOF {
			t.Fatalf("after FIN: readable %v, read %v; want readable and EOF", st.Readable(), err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		s, p := newRawServer(t, Config{})
		st, calls, _ := accept(t, s, p, 1)
		p.send(header{typ: typeWindowUpdate, flags: flagRST, streamID: 1}, nil)
		called(t, calls, "reset")
		if !st.Readable() {
			t.Fatal("not readable after reset")
		}
	})
	t.Run("session end", func(t *testing.T) {
		s, p := newRawServer(t, Config{})
		st, calls, _ := accept(t, s, p, 1)
		p.conn.Close()
		called(t, calls, "the session's end")
		if !st.Readable() {
			t.Fatal("not readable after the session ended")
		}
		// Registering after the end calls back at once.
		late := make(chan struct{}, 1)
		st.OnReadable(func() { late <- struct{}{} })
		called(t, late, "a registration after the end")
	})
	t.Run("read deadline", func(t *testing.T) {
		s, p := newRawServer(t, Config{})
		st, calls, _ := accept(t, s, p, 1)
		// A deadline that passes later, and one already past: Read would
		// return at once, so the parked reader is told.
		_ = st.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		called(t, calls, "a read deadline passing")
		if !st.Readable() {
			t.Fatal("not readable with its read deadline passed")
		}
		_ = st.SetReadDeadline(time.Time{})
		if st.Readable() {
			t.Fatal("readable once the deadline was cleared")
		}
		_ = st.SetReadDeadline(time.Now())
		called(t, calls, "a read deadline set in the past")
	})
	t.Run("stopped", func(t *testing.T) {
		s, p := newRawServer(t, Config{})
		st, calls, stop := accept(t, s, p, 1)
		stop()
		p.send(header{typ: typeData, streamID: 1, length: 2}, []byte("hi"))
		// The ping's answer comes after the data frame was handled.
		p.send(header{typ: typePing, flags: flagSYN, length: 3}, nil)
		if h := p.next(); h.typ != typePing {
			t.Fatalf("got %v, want the ping answer", h)
		}
		if !st.Readable() {
			t.Fatal("not readable after data")
		}
		select {
		case <-calls:
			t.Fatal("called after stop")
		default:
		}
	})
}
