package client_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
)

// An agent shared by several runs leaves with the last of them, and only
// then: Retire is refused while another client is connected, and once it
// is agreed no new client can join the agent that is about to exit.
func TestSharedAgentRetiresWithItsLastClientOnly(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{Retirable: true})
	alice := dial(t, a.Addr(), client.Options{})
	bob := dial(t, a.Addr(), client.Options{})
	ctx := ctxTimeout(t, 10*time.Second)

	left, why, err := alice.Retire(ctx)
	if err != nil || left || !strings.Contains(why, "1 other client is connected") {
		t.Fatalf("alice's Retire with bob connected = %v, %q, %v; want refused naming 1 other client", left, why, err)
	}
	if _, err := alice.Ping(ctx); err != nil {
		t.Fatalf("alice's tunnel after a refused Retire: %v", err)
	}
	alice.Close()

	// bob is now alone; the agent may have counted alice out a moment
	// later than her Close returned.
	for {
		left, why, err = bob.Retire(ctx)
		if err != nil || left || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || !left {
		t.Fatalf("bob's Retire alone = %v, %q, %v; want agreed", left, why, err)
	}
	_, err = client.Dial(context.Background(), client.Options{Address: a.Addr(), Token: testToken, CommunicationTimeout: 5 * time.Second})
	if !errors.Is(err, client.ErrAgentRetiring) {
		t.Fatalf("a new client after the Retire: Dial = %v, want ErrAgentRetiring", err)
	}
	if _, err := bob.Ping(ctx); err != nil {
		t.Fatalf("bob's tunnel after his Retire: %v", err)
	}
	bob.Close()
	a.WaitExit(10 * time.Second)
}

// A standing agent (started by hand, no --idle-exit) never retires.
func TestStandingAgentRefusesToRetire(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	left, why, err := c.Retire(ctxTimeout(t, 10*time.Second))
	if err != nil || left || !strings.Contains(why, "not started for runs") {
		t.Fatalf("Retire = %v, %q, %v; want refused: not started for runs", left, why, err)
	}
	c.Close()
	dial(t, a.Addr(), client.Options{})
}

// A client whose going away never reaches the agent (killed, behind a
// port-forward that keeps the pod's side open) does not keep a shared
// agent alive: Retire pings the others and counts only those that answer.
func TestRetireCountsOnlyClientsThatAnswer(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{Retirable: true})
	frozen := freezableProxy(t, a.Addr())
	alice := dial(t, frozen.addr, client.Options{})
	bob := dial(t, a.Addr(), client.Options{})
	ctx := ctxTimeout(t, 20*time.Second)
	if left, why, err := bob.Retire(ctx); err != nil || left {
		t.Fatalf("bob's Retire with alice alive = %v, %q, %v; want refused", left, why, err)
	}
	// A round trip: the agent has alice's tunnel whole (a client still
	// setting up its tunnel cannot be pinged, and counts as alive).
	if _, err := alice.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	frozen.freeze() // alice's connection stays open on the agent's side, and silent
	left, why, err := bob.Retire(ctx)
	if err != nil || !left {
		t.Fatalf("bob's Retire once alice went silent = %v, %q, %v; want agreed", left, why, err)
	}
	bob.Close()
	a.WaitExit(10 * time.Second)
}

// proxy relays one address's connections until freeze, after which it
// relays nothing and closes nothing, as a vanished client behind a
// port-forward looks to the agent.
type proxy struct {
	addr   string
	frozen chan struct{}
	once   sync.Once
}

func freezableProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), frozen: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			go p.relay(up, c)
			go p.relay(c, up)
		}
	}()
	return p
}

func (p *proxy) freeze() { p.once.Do(func() { close(p.frozen) }) }

// relay copies src to dst until frozen: after, what arrives is dropped.
func (p *proxy) relay(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-p.frozen:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// A client's Close is quiet: the agent ends the tunnel after the goodbye,
// and what ends with it (the DNS stream) is not news worth a warning.
func TestCloseLogsNoWarning(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	var logs syncBuffer
	c := dial(t, a.Addr(), client.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if _, err := c.Ping(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if s := logs.String(); s != "" {
		t.Errorf("Close logged:\n%s", s)
	}
}

// syncBuffer is a strings.Builder safe for a logger's writes and a read.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
