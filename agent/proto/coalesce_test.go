package proto

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/hashicorp/yamux"
)

// recordingConn records each Write as one element.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writes = append(r.writes, append([]byte(nil), p...))
	r.mu.Unlock()
	return len(p), nil
}

func header(typ byte, length uint32) []byte {
	h := make([]byte, muxHeaderSize)
	h[1] = typ
	h[8], h[9], h[10], h[11] = byte(length>>24), byte(length>>16), byte(length>>8), byte(length)
	return h
}

func TestCoalesceJoinsDataFramesOnly(t *testing.T) {
	rec := &recordingConn{}
	c := CoalesceFrames(rec)
	body := []byte("hello")
	steps := []struct {
		write []byte
		n     int
	}{
		{header(muxTypeData, 5), muxHeaderSize}, // held
		{body, 5},                               // sent with it
		{header(1, 4096), muxHeaderSize},        // window update: at once
		{header(2, 7), muxHeaderSize},           // ping: at once
		{header(muxTypeData, 0), muxHeaderSize}, // data without body (FIN): at once
	}
	for i, s := range steps {
		n, err := c.Write(s.write)
		if err != nil || n != s.n {
			t.Fatalf("write %d: %d, %v; want %d", i, n, err, s.n)
		}
	}
	want := [][]byte{append(header(muxTypeData, 5), body...), header(1, 4096), header(2, 7), header(muxTypeData, 0)}
	if len(rec.writes) != len(want) {
		t.Fatalf("%d writes reached the conn, want %d: %q", len(rec.writes), len(want), rec.writes)
	}
	for i := range want {
		if !bytes.Equal(rec.writes[i], want[i]) {
			t.Errorf("write %d = %x, want %x", i, rec.writes[i], want[i])
		}
	}
}

// A yamux session over coalescing conns carries streams both ways, bytes
// intact, on a socket (writev) and on a pipe (one joined buffer).
func TestCoalescedSessionCarriesStreams(t *testing.T) {
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
			cli, err := yamux.Client(CoalesceFrames(a), MuxConfig(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			srv, err := yamux.Server(CoalesceFrames(b), MuxConfig(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			go func() {
				for {
					s, err := srv.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(s, s); s.Close() }()
				}
			}()
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
// without joined frames: bulk (64 KiB writes) and request/response (1 B).
func BenchmarkTunnel(b *testing.B) {
	for _, mode := range []string{"plain", "coalesced"} {
		wrap := func(c net.Conn) net.Conn { return c }
		if mode == "coalesced" {
			wrap = CoalesceFrames
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
			go func() {
				for {
					s, err := srv.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(s, s); s.Close() }()
				}
			}()
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
