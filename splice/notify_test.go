package splice

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// notifiedSide is c as a Side that idles in the process's epoll set.
func notifiedSide(t *testing.T, c *net.TCPConn) Side {
	t.Helper()
	n := TCPNotifier(c)
	if n == nil {
		t.Fatal("TCPNotifier: nil for a loopback TCP socket (no epoll?)")
	}
	return Side{Conn: c, Notifier: n}
}

// started runs Start between a and b; its Result comes on the channel.
func started(ctx context.Context, a, b Side) chan Result {
	res := make(chan Result, 1)
	Start(ctx, a, b, func(r Result) { res <- r })
	return res
}

func TestStartWithNotifiersCopiesBulkAndHalfCloses(t *testing.T) {
	left, inA := tcpPair(t)
	inB, right := tcpPair(t)
	res := started(context.Background(), notifiedSide(t, inA), notifiedSide(t, inB))

	payload := bytes.Repeat([]byte("0123456789abcdef"), 3*BufferSize/16+5)
	go func() {
		_, _ = left.Write(payload)
		_ = left.CloseWrite()
	}()
	got, err := io.ReadAll(right)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("right read %d bytes, %v; want all %d, then EOF (the half-close passed on)", len(got), err, len(payload))
	}
	// The other direction still works after the half-close.
	if _, err := right.Write([]byte("an answer")); err != nil {
		t.Fatal(err)
	}
	_ = right.CloseWrite()
	got, err = io.ReadAll(left)
	if err != nil || string(got) != "an answer" {
		t.Fatalf("left read %q, %v; want the answer, then EOF", got, err)
	}
	r := <-res
	if r.Err != nil || r.AToB != int64(len(payload)) || r.BToA != int64(len("an answer")) {
		t.Errorf("Result = %+v; want no error, %d bytes a→b and %d b→a", r, len(payload), len("an answer"))
	}
}

func TestStartWithNotifiersPassesAResetOn(t *testing.T) {
	left, inA := tcpPair(t)
	inB, right := tcpPair(t)
	res := started(context.Background(), notifiedSide(t, inA), notifiedSide(t, inB))
	if _, err := left.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(right, make([]byte, 1)); err != nil {
		t.Fatalf("the first byte did not pass: %v", err)
	}
	_ = right.SetLinger(0)
	_ = right.Close()
	if _, err := io.ReadAll(left); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("left read after the peer's reset: %v, want ECONNRESET", err)
	}
	if r := <-res; r.Err == nil {
		t.Errorf("Result.Err is nil after a reset")
	}
}

// Closing a socket takes it out of the epoll set without an event: the
// context's end must still wake both idle directions.
func TestStartWithNotifiersEndsWithItsContext(t *testing.T) {
	_, inA := tcpPair(t)
	inB, _ := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	res := started(ctx, notifiedSide(t, inA), notifiedSide(t, inB))
	cancel()
	select {
	case <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("Start's flow did not end after its context did")
	}
}

// What the notifiers are for: idle flows that have carried data hold no
// goroutine (waited for with a bounded poll: a copying goroutine lingers
// a moment after its burst).
func TestIdleNotifiedFlowsHoldNoGoroutine(t *testing.T) {
	if _, err := thePoller(); err != nil {
		t.Fatal(err)
	}
	const flows = 20
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	var results []chan Result
	for range flows {
		left, inA := tcpPair(t)
		inB, right := tcpPair(t)
		results = append(results, started(ctx, notifiedSide(t, inA), notifiedSide(t, inB)))
		for _, c := range [][2]*net.TCPConn{{left, right}, {right, left}} {
			if _, err := c[0].Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c[1], make([]byte, 1)); err != nil {
				t.Fatalf("a byte did not pass: %v", err)
			}
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines for %d idle flows, want none more than the %d before:\n%s",
				runtime.NumGoroutine(), flows, before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	for _, r := range results {
		<-r
	}
}

// noDeadline hides a socket's read deadline: the direction reading it
// waits in its Notifier while it lingers, not in a read.
type noDeadline struct{ c *net.TCPConn }

func (n noDeadline) Read(p []byte) (int, error)  { return n.c.Read(p) }
func (n noDeadline) Write(p []byte) (int, error) { return n.c.Write(p) }
func (n noDeadline) CloseWrite() error           { return n.c.CloseWrite() }
func (n noDeadline) Close() error                { return n.c.Close() }

// A direction that parked (no goroutine) starts again for more data,
// whether it lingered in a read with a deadline or in its Notifier.
func TestParkedNotifiedFlowWakesForMore(t *testing.T) {
	if _, err := thePoller(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		side func(*net.TCPConn) Side
	}{
		{"read deadline", func(c *net.TCPConn) Side { return notifiedSide(t, c) }},
		{"notifier only", func(c *net.TCPConn) Side { s := notifiedSide(t, c); s.Conn = noDeadline{c}; return s }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			left, inA := tcpPair(t)
			inB, right := tcpPair(t)
			res := started(context.Background(), tc.side(inA), tc.side(inB))
			pass := func(what string) {
				t.Helper()
				for _, c := range [][2]*net.TCPConn{{left, right}, {right, left}} {
					if _, err := c[0].Write([]byte(what)); err != nil {
						t.Fatal(err)
					}
					got := make([]byte, len(what))
					_ = c[1].SetReadDeadline(time.Now().Add(10 * time.Second)) // fail, not hang
					if _, err := io.ReadFull(c[1], got); err != nil || string(got) != what {
						t.Fatalf("read %q, %v; want %q", got, err, what)
					}
				}
			}
			pass("first")
			deadline := time.Now().Add(5 * time.Second)
			for runtime.NumGoroutine() > before {
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines after the flow idled, want %d (both directions parked)", runtime.NumGoroutine(), before)
				}
				time.Sleep(10 * time.Millisecond)
			}
			pass("after parking")
			_ = left.CloseWrite()
			_ = right.CloseWrite()
			r := <-res
			if want := int64(len("first") + len("after parking")); r.Err != nil || r.AToB != want || r.BToA != want {
				t.Errorf("Result = %+v; want no error and %d bytes each way", r, want)
			}
		})
	}
}
