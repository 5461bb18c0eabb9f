// Package agenttest runs a real agent in-process on loopback for tests of
// the packages that talk to one (agent/client, agent/connect, the router's
// remote side), in the spirit of containerd's containertest: no mock, the
// server package itself, stoppable and restartable on the same address so
// that reconnection can be tested.
package agenttest

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/tunneltls"
)

// Token is the token Start gives an agent whose Options have none.
const Token = "test-token-0123456789"

// Agent is an agent serving on a loopback port.
type Agent struct {
	t      testing.TB
	opts   agent.Options
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// Start serves an agent on 127.0.0.1 until the test ends. Zero fields of
// opts get test values: Token, a resolv.conf with the search domain
// default.svc.cluster.local and ndots:5, a hosts file with localhost, and
// a logger that drops everything.
func Start(t testing.TB, opts agent.Options) *Agent {
	t.Helper()
	if opts.Token == "" {
		opts.Token = Token
	}
	if opts.ResolvConfPath == "" {
		opts.ResolvConfPath = WriteFile(t, "resolv.conf", "search default.svc.cluster.local\noptions ndots:5\n")
	}
	if opts.HostsPath == "" {
		opts.HostsPath = WriteFile(t, "hosts", "127.0.0.1 localhost\n")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{t: t, opts: opts, addr: "127.0.0.1:0"}
	a.Restart()
	t.Cleanup(a.Stop)
	return a
}

// Addr is the agent's HOST:PORT.
func (a *Agent) Addr() string { return a.addr }

// Fingerprint is the fingerprint of the agent's TLS key, for a client's
// Options.Fingerprint; "" for an agent without TLS.
func (a *Agent) Fingerprint() string {
	a.t.Helper()
	if a.opts.TLSKey == nil {
		return ""
	}
	fp, err := tunneltls.FingerprintOf(a.opts.TLSKey.Public())
	if err != nil {
		a.t.Fatal(err)
	}
	return fp.String()
}

// Key is a new Ed25519 key, for an agent's Options.TLSKey.
func Key(t testing.TB) crypto.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Restart starts a stopped agent again on the same address (a fresh
// server: no tunnel survives a stop).
func (a *Agent) Restart() {
	a.t.Helper()
	s, err := agent.New(a.opts)
	if err != nil {
		a.t.Fatal(err)
	}
	var ln net.Listener
	// The port may still be held a moment after a stop: retry, bounded.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ln, err = net.Listen("tcp", a.addr); err == nil || time.Now().After(deadline) {
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

// Stop kills the agent: its listener and every tunnel close. Stopping a
// stopped agent does nothing.
func (a *Agent) Stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	if err := <-a.done; err != nil {
		a.t.Errorf("agent Serve: %v", err)
	}
	a.cancel = nil
}

// WaitExit waits up to within for the agent to end by itself (one that
// retired with its last client does), failing the test if it does not.
func (a *Agent) WaitExit(within time.Duration) {
	a.t.Helper()
	select {
	case err := <-a.done:
		if err != nil {
			a.t.Errorf("agent Serve: %v", err)
		}
		a.cancel()
		a.cancel = nil
	case <-time.After(within):
		a.t.Fatalf("the agent still serves %s later", within)
	}
}

// Dial connects a client to the agent at addr with opts (Token defaults
// to Token), closed when the test ends.
func Dial(t testing.TB, addr string, opts client.Options) *client.Client {
	t.Helper()
	opts.Address = addr
	if opts.Token == "" {
		opts.Token = Token
	}
	c, err := client.Dial(context.Background(), opts)
	if err != nil {
		t.Fatalf("client.Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// WriteFile writes content to a file name in a temporary folder of the
// test and returns its path.
func WriteFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
