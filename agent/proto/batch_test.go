package proto

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// Written frames reach the conn whole and in order, written out by Close
// when they have not left yet.
func TestBatchKeepsOrderAndCloseFlushes(t *testing.T) {
	a, b := net.Pipe() // a write returns only once the peer read it all
	c := BatchFrames(a)
	var want []byte
	for i := range 1000 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i%300)
		want = append(want, p...)
		if n, err := c.Write(p); n != len(p) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	got := make(chan []byte)
	go func() { all, _ := io.ReadAll(b); got <- all }()
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if all := <-got; !bytes.Equal(all, want) {
		t.Fatalf("peer read %d bytes, want the %d written, in order", len(all), len(want))
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// A peer that does not read holds at most MaxBatch bytes buffered, plus
// the batch being written: the writer blocks until the peer reads.
func TestBatchIsBounded(t *testing.T) {
	a, b := net.Pipe() // the flusher's write blocks until the peer reads
	defer b.Close()
	c := BatchFrames(a).(*batchConn)
	defer c.Close()
	chunk := make([]byte, 16<<10)
	var written atomic.Int64
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		for written.Load() < 4*MaxBatch {
			if _, err := c.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	}()
	// Wait until the writer waits for room (or wrote everything, which it
	// must not).
	waiting := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.waiting > 0
	}
	for deadline := time.Now().Add(10 * time.Second); !waiting(); {
		select {
		case <-returned:
			t.Fatalf("wrote %d bytes to a peer that read none", written.Load())
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer neither returned nor waited for room")
		}
	}
	c.mu.Lock()
	pending := len(c.pending)
	c.mu.Unlock()
	if n := written.Load(); n > 2*MaxBatch || pending > MaxBatch {
		t.Fatalf("%d bytes accepted (%d buffered) for a peer that read none, want at most %d (%d)", n, pending, 2*MaxBatch, MaxBatch)
	}
	go io.Copy(io.Discard, b)
	<-returned
	if n := written.Load(); n != 4*MaxBatch {
		t.Fatalf("wrote %d bytes once the peer read, want %d", n, 4*MaxBatch)
	}
}

// A failed write is reported by the next Writes.
func TestBatchReportsWriteError(t *testing.T) {
	a, b := net.Pipe()
	c := BatchFrames(a)
	defer c.Close()
	b.Close() // the pipe's writes now fail
	var err error
	for err == nil {
		_, err = c.Write([]byte("frame"))
	}
	if !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write: %v, want the conn's own error (io.ErrClosedPipe)", err)
	}
}

// A yamux session over batching conns carries streams both ways, bytes
// intact, on a socket and on a pipe.
func TestBatchedSessionCarriesStreams(t *testing.T) {
	for _, kind := range []string{"tcp", "pipe"} {
		t.Run(kind, func(t *testing.T) {
			var a, b net.Conn
			if kind == "pipe" {
				a, b = net.Pipe()
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				done := make(chan net.Conn)
				go func() { c, _ := ln.Accept(); done <- c }()
				if a, err = net.Dial("tcp", ln.Addr().String()); err != nil {
					t.Fatal(err)
				}
				b = <-done
			}
			cli, err := yamux.Client(BatchFrames(a), MuxConfig(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			srv, err := yamux.Server(BatchFrames(b), MuxConfig(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			go echoStreams(srv)
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, err := cli.Open()
					if err != nil {
						t.Error(err)
						return
					}
					defer s.Close()
					data := make([]byte, 3<<20)
					rand.Read(data)
					go func() { s.Write(data); s.Close() }() // Close half-closes: the echo still comes back
					got, err := io.ReadAll(s)
					if err != nil || !bytes.Equal(got, data) {
						t.Errorf("echo: %d bytes back of %d, err %v", len(got), len(data), err)
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkTunnel compares a yamux session over loopback TCP with and
// without batched frames: bulk (64 KiB writes) and request/response (1 B).
func BenchmarkTunnel(b *testing.B) {
	for _, mode := range []string{"plain", "batched"} {
		wrap := func(c net.Conn) net.Conn { return c }
		if mode == "batched" {
			wrap = BatchFrames
		}
		setup := func(b *testing.B) (*yamux.Session, func()) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan net.Conn)
			go func() { c, _ := ln.Accept(); done <- c }()
			a, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			srvConn := <-done
			ln.Close()
			cli, _ := yamux.Client(wrap(a), MuxConfig(nil))
			srv, _ := yamux.Server(wrap(srvConn), MuxConfig(nil))
			go echoStreams(srv)
			return cli, func() { cli.Close(); srv.Close() }
		}
		b.Run(mode+"/bulk64k", func(b *testing.B) {
			cli, stop := setup(b)
			defer stop()
			s, _ := cli.Open()
			buf := make([]byte, 64<<10)
			go io.Copy(io.Discard, s)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				if _, err := s.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode+"/rr1", func(b *testing.B) {
			cli, stop := setup(b)
			defer stop()
			s, _ := cli.Open()
			one := []byte{1}
			b.ResetTimer()
			for range b.N {
				if _, err := s.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(s, one); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Close returns, and ends the flusher, when the peer never reads what is
// pending, on a conn without write deadlines too.
func TestBatchCloseDoesNotWaitForeverOnAStuckPeer(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := BatchFrames(noDeadlines{a})
	if _, err := c.Write([]byte("never read")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// noDeadlines is a conn whose deadlines are not supported (some
// port-forward streams).
type noDeadlines struct{ net.Conn }

func (noDeadlines) SetWriteDeadline(time.Time) error { return errors.New("deadlines not supported") }

// echoStreams echoes every stream the session accepts, until it ends.
func echoStreams(sess *yamux.Session) {
	for {
		s, err := sess.Accept()
		if err != nil {
			return
		}
		go func() { io.Copy(s, s); s.Close() }()
	}
}
