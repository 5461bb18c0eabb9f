package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
)

const testToken = "test-token-0123456789"

// requireRoot skips a test that needs root, or fails it in CI, where a
// skipped test would hide a broken setup.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (CI runs as root)")
	}
	t.Skip("this test needs root")
}

// testAgent is an agent serving on loopback, stoppable and restartable on
// the same address.
type testAgent struct {
	t      testing.TB
	opts   agent.Options
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t testing.TB, opts agent.Options) *testAgent {
	t.Helper()
	if opts.Token == "" {
		opts.Token = testToken
	}
	if opts.ResolvConfPath == "" {
		opts.ResolvConfPath = writeFile(t, "resolv.conf", "search default.svc.cluster.local\noptions ndots:5\n")
	}
	if opts.HostsPath == "" {
		opts.HostsPath = writeFile(t, "hosts", "127.0.0.1 localhost\n")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &testAgent{t: t, opts: opts, addr: "127.0.0.1:0"}
	a.start()
	t.Cleanup(a.stop)
	return a
}

func (a *testAgent) start() {
	a.t.Helper()
	s, err := agent.New(a.opts)
	if err != nil {
		a.t.Fatal(err)
	}
	var ln net.Listener
	// The port may linger a moment after a stop; retry briefly.
	for i := 0; ; i++ {
		if ln, err = net.Listen("tcp", a.addr); err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		a.t.Fatalf("agent listen on %s: %v", a.addr, err)
	}
	a.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan error, 1)
	go func() { a.done <- s.Serve(ctx, ln) }()
}

// stop kills the agent: its listener and every tunnel close.
func (a *testAgent) stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	if err := <-a.done; err != nil {
		a.t.Errorf("agent Serve: %v", err)
	}
	a.cancel = nil
}

func dial(t testing.TB, addr string, opts client.Options) *client.Client {
	t.Helper()
	opts.Address = addr
	if opts.Token == "" {
		opts.Token = testToken
	}
	c, err := client.Dial(context.Background(), opts)
	if err != nil {
		t.Fatalf("client.Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tcpEchoServer echoes every connection until the client half-closes, then
// closes its side too.
func tcpEchoServer(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func udpEchoServer(t testing.TB) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
