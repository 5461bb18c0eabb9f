package splice

import (
	"io"
	"testing"
)

// TestTCPTryWriterNeverWaits: it writes what the socket takes, returns 0
// once the socket's buffer is full (at once, not when the peer reads),
// and 0 after the socket is closed.
func TestTCPTryWriterNeverWaits(t *testing.T) {
	a, b := tcpPair(t)
	w := NewTCPTryWriter(a)
	if w == nil {
		t.Fatal("no TCPTryWriter for a TCP socket")
	}
	if n := w.TryWrite([]byte("hello")); n != 5 {
		t.Fatalf("TryWrite(hello) = %d, want 5", n)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
	// Nobody reads b: the buffers fill, and TryWrite must say so rather
	// than wait (a wait would hang here for good).
	chunk := make([]byte, 64<<10)
	total := 0
	for {
		n := w.TryWrite(chunk)
		total += n
		if n == 0 {
			break
		}
		if total > 1<<30 {
			t.Fatal("1 GiB written to a socket nobody reads")
		}
	}
	t.Logf("the socket took %d bytes before TryWrite returned 0", total)
	a.Close()
	if n := w.TryWrite([]byte("x")); n != 0 {
		t.Fatalf("TryWrite on a closed socket = %d, want 0", n)
	}
}
