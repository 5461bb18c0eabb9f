package mux_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/mux"
)

// echoServer accepts streams and echoes each until its EOF, then closes it.
func echoServer(s session) {
	for {
		c, err := s.Accept()
		if err != nil {
			return
		}
		go func() {
			_, _ = io.Copy(c, c)
			_ = c.Close()
		}()
	}
}

func TestEchoAndHalfClose(t *testing.T) {
	sessions(t, 64, func(t *testing.T, client, server session) {
		go echoServer(server)
		c, err := client.Open()
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte("hello over one stream")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		// Half-close: the echo server sees EOF after msg, echoes it and
		// closes; we still read everything.
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read after half-close: %v", err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo = %q, want %q", got, msg)
		}
		if _, err := c.Write([]byte("x")); err == nil {
			t.Fatal("write after Close succeeded")
		}
	})
}

func TestServerOpensStream(t *testing.T) {
	sessions(t, 64, func(t *testing.T, client, server session) {
		go echoServer(client)
		c, err := server.Open()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo = %q, %v", buf, err)
		}
		c.Close()
	})
}

// TestBulkSlowReader sends 64 MiB to a reader that reads in small, slow
// steps, so the sender exhausts the window again and again.
func TestBulkSlowReader(t *testing.T) {
	const size = 64 << 20
	sessions(t, 64, func(t *testing.T, client, server session) {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rand.Uint32())
		}
		want := sha256.Sum256(data)
		type result struct {
			sum [32]byte
			n   int64
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := server.Accept()
			if err != nil {
				done <- result{err: err}
				return
			}
			h := sha256.New()
			buf := make([]byte, 3000)
			var n int64
			for reads := 0; ; reads++ {
				k, err := c.Read(buf)
				h.Write(buf[:k])
				n += int64(k)
				if reads%512 == 0 {
					time.Sleep(time.Millisecond) // slow reader, not synchronisation
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					done <- result{err: err}
					return
				}
			}
			c.Close()
			var r result
			copy(r.sum[:], h.Sum(nil))
			r.n = n
			done <- r
		}()
		c, err := client.Open()
		if err != nil {
			t.Fatal(err)
		}
		if n, err := c.Write(data); err != nil || n != size {
			t.Fatalf("write = %d, %v", n, err)
		}
		c.Close()
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.n != size || r.sum != want {
			t.Fatalf("received %d bytes, digest match %v; want %d bytes intact", r.n, r.sum == want, size)
		}
	})
}

func TestManyConcurrentStreams(t *testing.T) {
	const streams = 200
	sessions(t, 256, func(t *testing.T, client, server session) {
		go echoServer(server)
		var wg sync.WaitGroup
		errs := make(chan error, streams)
		for i := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := client.Open()
				if err != nil {
					errs <- err
					return
				}
				msg := bytes.Repeat([]byte{byte(i)}, 1000+i*37)
				go func() {
					_, _ = c.Write(msg)
					_ = c.Close()
				}()
				got, err := io.ReadAll(c)
				if err != nil {
					errs <- fmt.Errorf("stream %d: %w", i, err)
					return
				}
				if !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("stream %d: echo of %d bytes differs", i, len(msg))
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestReadDeadline(t *testing.T) {
	sessions(t, 64, func(t *testing.T, client, server session) {
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := server.Accept()
			if err == nil {
				accepted <- c
			}
		}()
		c, err := client.Open()
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("read past deadline: %v, want a timeout", err)
		}
		// Clearing the deadline lets a later read succeed.
		c.SetReadDeadline(time.Time{})
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		sc := <-accepted
		if _, err := sc.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != 'y' {
			t.Fatalf("read after clearing deadline = %q, %v", b, err)
		}
	})
}

// TestWriteDeadlineOnFullWindow: a Write blocked on a window the peer does
// not open returns a timeout at its deadline.
func TestWriteDeadlineOnFullWindow(t *testing.T) {
	sessions(t, 64, func(t *testing.T, client, server session) {
		go func() { _, _ = server.Accept() }() // accepted, never read
		c, err := client.Open()
		if err != nil {
			t.Fatal(err)
		}
		c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Write(make([]byte, window+1))
		if !isTimeout(err) {
			t.Fatalf("write beyond window = %d, %v; want a timeout", n, err)
		}
		if n > window {
			t.Fatalf("wrote %d bytes, more than the window %d", n, window)
		}
	})
}

// TestResetWhenBacklogFull: a stream beyond the peer's accept backlog is
// reset, and the opener's Read reports it.
func TestResetWhenBacklogFull(t *testing.T) {
	sessions(t, 1, func(t *testing.T, client, server session) {
		first, err := client.Open()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := first.Write([]byte("a")); err != nil {
			t.Fatal(err)
		}
		second, err := client.Open()
		if err != nil {
			t.Fatal(err)
		}
		_, err = second.Read(make([]byte, 1))
		if !errors.Is(err, mux.ErrConnectionReset) && !errors.Is(err, yamux.ErrConnectionReset) {
			t.Fatalf("read on a refused stream: %v, want a reset", err)
		}
		// The first one still works.
		c, err := server.Accept()
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != 'a' {
			t.Fatalf("first stream read %q, %v", b, err)
		}
	})
}

// TestCloseWakesEverything: closing a session ends blocked Reads, Writes
// and Accepts on both ends.
func TestCloseWakesEverything(t *testing.T) {
	sessions(t, 64, func(t *testing.T, client, server session) {
		sc := make(chan net.Conn, 1)
		go func() {
			c, err := server.Accept()
			if err == nil {
				sc <- c
			}
		}()
		c, err := client.Open()
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		srv := <-sc
		var wg sync.WaitGroup
		errs := make(chan string, 4)
		block := func(name string, f func() error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(); err == nil {
					errs <- name + " returned no error"
				}
			}()
		}
		block("client read", func() error { _, err := c.Read(make([]byte, 1)); return err })
		block("client write", func() error { _, err := c.Write(make([]byte, 2*window)); return err })
		block("client accept", func() error { _, err := client.Accept(); return err })
		block("server read", func() error {
			_, err := io.Copy(io.Discard, srv) // never EOF: the client does not close
			if err == nil {
				return errors.New("EOF")
			}
			return err
		})
		client.Close()
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})
}

func TestTimeoutErrorMatchesDeadlineExceeded(t *testing.T) {
	if !errors.Is(mux.ErrTimeout, os.ErrDeadlineExceeded) || !isTimeout(mux.ErrTimeout) {
		t.Fatal("ErrTimeout is not a timeout")
	}
}
