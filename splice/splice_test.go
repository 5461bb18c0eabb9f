package splice

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	for _, x := range []*net.TCPConn{c, s} {
		_ = x.SetDeadline(time.Now().Add(10 * time.Second))
	}
	return c, s
}

// spliced runs Both between a and b in the background; its Result comes
// on the channel.
func spliced(a, b Side) chan Result {
	res := make(chan Result, 1)
	go func() { res <- Both(context.Background(), a, b) }()
	return res
}

func TestBothPassesHalfClosesEachWay(t *testing.T) {
	left, inA := tcpPair(t)
	inB, right := tcpPair(t)
	res := spliced(Side{Conn: inA}, Side{Conn: inB})

	if _, err := left.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := left.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(right)
	if err != nil || string(got) != "request" {
		t.Fatalf("right read %q, %v; want the request, then EOF (the half-close passed on)", got, err)
	}
	// The other direction still works after the half-close.
	if _, err := right.Write([]byte("a long answer")); err != nil {
		t.Fatal(err)
	}
	_ = right.CloseWrite()
	got, err = io.ReadAll(left)
	if err != nil || string(got) != "a long answer" {
		t.Fatalf("left read %q, %v; want the answer, then EOF", got, err)
	}
	r := <-res
	if r.Err != nil || r.AToB != int64(len("request")) || r.BToA != int64(len("a long answer")) {
		t.Errorf("Result = %+v; want no error, %d bytes a→b and %d b→a", r, len("request"), len("a long answer"))
	}
}

func TestBothPassesAResetOn(t *testing.T) {
	left, inA := tcpPair(t)
	inB, right := tcpPair(t)
	res := spliced(Side{Conn: inA}, Side{Conn: inB})

	if _, err := left.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 1); func() error { _, err := io.ReadFull(right, b); return err }() != nil {
		t.Fatal("the first byte did not pass")
	}
	// right's owner resets its connection: left must see a reset, not a
	// clean end that would pass a broken exchange for a complete one.
	_ = right.SetLinger(0)
	_ = right.Close()
	_, err := io.ReadAll(left)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("left read after the peer's reset: %v, want ECONNRESET", err)
	}
	if r := <-res; r.Err == nil {
		t.Errorf("Result.Err is nil after a reset")
	}
}

// A readiness wait must leave a pending error for the read: a MSG_PEEK
// consumes ECONNRESET, and the read then sees a clean EOF.
func TestCopyFromAResetSocketIsAReadError(t *testing.T) {
	src, peer := tcpPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := Copy(io.Discard, src, TCPWait(src), nil)
		done <- err
	}()
	_ = peer.SetLinger(0)
	_ = peer.Close()
	err := <-done
	var e *Error
	if !errors.As(err, &e) || e.Write || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Copy from a reset socket = %v; want a read *Error wrapping ECONNRESET", err)
	}
}

func TestCopyGrowsItsBufferForBulk(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3*BufferSize/16+5)
	var out bytes.Buffer
	n, err := Copy(&out, bytes.NewReader(payload), nil, nil)
	if err != nil || n != int64(len(payload)) || !bytes.Equal(out.Bytes(), payload) {
		t.Fatalf("Copy = %d, %v; want all %d bytes", n, err, len(payload))
	}
}

func TestCopySaysWhichSideFailed(t *testing.T) {
	_, err := Copy(failingWriter{}, strings.NewReader("data"), nil, nil)
	if !IsWrite(err) {
		t.Errorf("a failing writer: %v, want a write error", err)
	}
	_, err = Copy(io.Discard, failingReader{}, nil, nil)
	if err == nil || IsWrite(err) {
		t.Errorf("a failing reader: %v, want a read error", err)
	}
}

func TestSideReaderComesFirst(t *testing.T) {
	left, inA := tcpPair(t)
	inB, right := tcpPair(t)
	// "GET " was already read from inA (by a protocol sniffer).
	res := spliced(Side{Conn: inA, Reader: io.MultiReader(strings.NewReader("GET "), inA)}, Side{Conn: inB})
	_, _ = left.Write([]byte("/ HTTP/1.1"))
	_ = left.CloseWrite()
	got, _ := io.ReadAll(right)
	if string(got) != "GET / HTTP/1.1" {
		t.Errorf("right got %q, want the sniffed bytes first", got)
	}
	_ = right.Close()
	<-res
}

func TestBothEndsWithItsContext(t *testing.T) {
	_, inA := tcpPair(t)
	inB, _ := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan Result, 1)
	go func() { res <- Both(ctx, Side{Conn: inA}, Side{Conn: inB}) }()
	cancel()
	select {
	case <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("Both did not return after its context ended")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk on fire") }

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("cable cut") }
