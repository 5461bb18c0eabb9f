package mux_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"
)

// copySink stands for a flow's socket: the receive loop's TryWrite and the
// reader's copy loop both write to out, and takes varies how much a
// TryWrite takes (all, part, nothing) so the two ways interleave.
type copySink struct {
	mu    sync.Mutex
	out   bytes.Buffer
	calls int
	takes func(call, n int) int
}

func (s *copySink) TryWrite(p []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	n := s.takes(s.calls, len(p))
	s.out.Write(p[:n])
	return n
}

func (s *copySink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

// TestSinkKeepsOrderAndWindow: small frames a waiting reader would only
// have copied to the sink go there from the receive loop; what the sink
// does not take, and large frames, are read, in order. Two windows'
// worth crosses, so the bytes the sink took must have reopened the window.
func TestSinkKeepsOrderAndWindow(t *testing.T) {
	sinks := map[string]func(call, n int) int{
		"takes all":   func(_, n int) int { return n },
		"takes some":  func(call, n int) int { return []int{n, n / 2, 0, n, 1}[call%5] },
		"takes never": func(int, int) int { return 0 },
	}
	data := make([]byte, 2*window+12345)
	for i := range data {
		data[i] = byte(i % 251)
	}
	mixed := []int{1, 100, 1000, 4096, 4097, 9000, 3000}
	small := []int{1000}
	for name, takes := range sinks {
		for _, clientImpl := range []impl{ours, theirs} {
			for _, sizes := range [][]int{mixed, small} {
				testSink(t, fmt.Sprintf("%s/%s-client/frames %v", name, clientImpl.name, sizes), clientImpl, takes, name, sizes, data)
			}
		}
	}
}

func testSink(t *testing.T, name string, clientImpl impl, takes func(call, n int) int, kind string, sizes []int, data []byte) {
	t.Run(name, func(t *testing.T) {
		client, server := sinkSessions(t, clientImpl)
		sent := make(chan error, 1)
		go func() {
			c, err := client.Open()
			// Frames of many sizes: the small ones may go to the
			// sink, the large ones (bulk) never do.
			for i, p := 0, data; err == nil && len(p) > 0; i++ {
				n := min(sizes[i%len(sizes)], len(p))
				_, err = c.Write(p[:n])
				p = p[n:]
			}
			if c != nil {
				c.Close()
			}
			sent <- err
		}()
		st, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		sink := &copySink{takes: takes}
		st.SetSink(sink)
		// A window never reopened stalls the copy: fail, not hang.
		_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
		// The reader is a copy loop to the sink, as splice's is.
		if _, err := io.CopyBuffer(sink, onlyReader{st}, make([]byte, 4096)); err != nil {
			t.Fatalf("copy: %v", err)
		}
		if err := <-sent; err != nil {
			t.Fatalf("send: %v", err)
		}
		got := sink.out.Bytes()
		if !bytes.Equal(got, data) {
			i := 0
			for i < min(len(got), len(data)) && got[i] == data[i] {
				i++
			}
			t.Fatalf("the sink holds %d bytes, want %d; they differ from byte %d", len(got), len(data), i)
		}
		direct := st.Direct()
		// How much goes straight to the sink depends on when the reader
		// waits, except: a sink that takes nothing has nothing, and one
		// that takes all small frames has all that came once the reader
		// first waited (it is never woken again), more than the window
		// (what came before is at most one).
		switch {
		case kind == "takes never" && direct != 0:
			t.Fatalf("Direct() = %d from a sink that takes nothing", direct)
		case kind == "takes all" && len(sizes) == 1 && direct <= window:
			t.Fatalf("Direct() = %d, want more than the window (%d)", direct, window)
		}
		t.Logf("%d of %d bytes went straight to the sink in %d calls", direct, len(data), sink.calls)
	})
}

// onlyReader hides the stream's WriteTo-like methods from io.CopyBuffer,
// so the copy reads into the small buffer as splice does.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// sinkSessions returns a client of impl and our server over loopback TCP.
func sinkSessions(t *testing.T, impl impl) (session, *mux.Session) {
	t.Helper()
	a, b := tcpPair(t)
	client := impl.client(a, 256)
	server, err := mux.Server(b, muxConfig(256))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// openedStream returns a stream a client opened (its end) and the server
// accepted.
func openedStream(t *testing.T) (net.Conn, *mux.Stream) {
	t.Helper()
	client, server := sinkSessions(t, ours)
	type opened struct {
		c   net.Conn
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		c, err := client.Open()
		ch <- opened{c, err}
	}()
	st, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	o := <-ch
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.c, st
}

// TestSinkTakesNothingWithoutWaitingReader: with nobody in Read, data is
// buffered, never written behind the reader's back.
func TestSinkTakesNothingWithoutWaitingReader(t *testing.T) {
	c, st := openedStream(t)
	sink := &copySink{takes: func(_, n int) int { return n }}
	st.SetSink(sink)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// Read only once the data is buffered.
	deadline := time.Now().Add(10 * time.Second)
	for !st.Readable() {
		if time.Now().After(deadline) {
			t.Fatal("the data never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("Read = %q, %v", buf, err)
	}
	if sink.calls != 0 || st.Direct() != 0 {
		t.Fatalf("the sink was called %d times (%d bytes) while no reader waited", sink.calls, st.Direct())
	}
}

// TestSinkTakesSmallFramesOnly: with the reader waiting, a small frame
// goes to the sink and Read does not return it; a frame larger than 4 KiB
// (bulk) is left to the reader.
func TestSinkTakesSmallFramesOnly(t *testing.T) {
	c, st := openedStream(t)
	sink := &copySink{takes: func(_, n int) int { return n }}
	st.SetSink(sink)
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	reads := make(chan []byte, 100)
	go func() {
		defer close(reads)
		for {
			buf := make([]byte, 64<<10)
			n, err := st.Read(buf)
			if n > 0 {
				reads <- buf[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	// Until the reader waits, a frame may be read: send one byte at a
	// time until one lands in the sink instead.
	direct := false
	for i := 0; i < 1000 && !direct; i++ {
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-reads:
		case <-time.After(20 * time.Millisecond):
		}
		direct = st.Direct() > 0
	}
	if !direct {
		t.Fatal("1000 one-byte frames, none written to the sink")
	}
	// The reader waits now. A large frame is its to read.
	before := st.Direct()
	big := bytes.Repeat([]byte{'y'}, 5000)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for len(got) < len(big) {
		p, ok := <-reads
		if !ok {
			t.Fatalf("the stream ended after %d of the large frame's bytes", len(got))
		}
		// A one-byte frame read late may come first.
		got = append(got, bytes.ReplaceAll(p, []byte{'x'}, nil)...)
	}
	if !bytes.Equal(got, big) || st.Direct() != before {
		t.Fatalf("the large frame: read %d bytes, %d went to the sink", len(got), st.Direct()-before)
	}
}
