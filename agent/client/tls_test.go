package client_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/agenttest"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/agent/tunneltls"
)

// With the agent's fingerprint pinned, the tunnel is TLS and flows go
// through it as in clear.
func TestPinnedAgentCarriesFlows(t *testing.T) {
	a := startAgent(t, agent.Options{TLSKey: agenttest.Key(t)})
	c := dial(t, a.Addr(), client.Options{Fingerprint: a.Fingerprint()})
	echo := tcpEchoServer(t)
	conn, err := c.DialTCP(ctxTimeout(t, 10*time.Second), echo)
	if err != nil {
		t.Fatalf("DialTCP through the TLS tunnel: %v", err)
	}
	defer conn.Close()
	msg := bytes.Repeat([]byte("through TLS "), 10_000)
	go func() { _, _ = conn.Write(msg) }()
	got := make([]byte, len(msg))
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the TLS tunnel: %v (equal %v)", err, bytes.Equal(got, msg))
	}
	if f := c.Facts(); strings.Join(f.SearchDomains, " ") != "default.svc.cluster.local" {
		t.Errorf("facts over TLS = %+v; want the agent's search domain", f)
	}
}

// recordingConn keeps every byte read from the connection.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// fakeAgent is a TLS server with a key of its own that records what one
// client sends it: every byte on the wire, and what arrives inside TLS
// after the handshake (it reads one Hello, then hangs up).
type fakeAgent struct {
	addr string
	done chan struct{}
	raw  *recordingConn
	// afterHandshake is what the client sent inside TLS.
	afterHandshake []byte
	handshakeErr   error
}

func startFakeAgent(t *testing.T, key crypto.Signer) *fakeAgent {
	t.Helper()
	cfg, _, err := tunneltls.ServerConfig(key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fakeAgent{addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		f.raw = &recordingConn{Conn: c}
		tc := tls.Server(f.raw, cfg)
		if f.handshakeErr = tc.Handshake(); f.handshakeErr != nil {
			_, _ = io.Copy(io.Discard, f.raw) // the wire, until the client hangs up
			return
		}
		inside := &recordingConn{Conn: tc}
		_, _ = proto.ReadHello(inside)
		f.afterHandshake = inside.bytes()
	}()
	return f
}

func (f *fakeAgent) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the fake agent's connection did not end")
	}
}

// A client that pins another key stops at the handshake: the fake agent
// gets no byte inside TLS, the token appears nowhere on the wire, and the
// error names both keys.
func TestWrongPinSendsNothingToTheFakeAgent(t *testing.T) {
	fake := startFakeAgent(t, agenttest.Key(t))
	want := startAgent(t, agent.Options{TLSKey: agenttest.Key(t)}).Fingerprint()
	_, err := client.Dial(ctxTimeout(t, 20*time.Second), client.Options{Address: fake.addr, Token: testToken,
		Fingerprint: want, CommunicationTimeout: 10 * time.Second})
	var mismatch *tunneltls.MismatchError
	if !errors.Is(err, client.ErrFingerprintMismatch) || !errors.As(err, &mismatch) {
		t.Fatalf("Dial to an agent with another key: %v; want ErrFingerprintMismatch", err)
	}
	t.Logf("the error: %v", err)
	if mismatch.Want.String() != want || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), mismatch.Got.String()) ||
		!strings.Contains(err.Error(), "no token was sent") || !strings.Contains(err.Error(), "trafficpolice agent fingerprint") {
		t.Errorf("mismatch error: %v; want it to name the pinned %s and the agent's key, and what to do", err, want)
	}
	fake.wait(t)
	if fake.handshakeErr == nil || len(fake.afterHandshake) > 0 {
		t.Errorf("the fake agent finished the handshake (%v) and got %q inside TLS; want a failed handshake and nothing", fake.handshakeErr, fake.afterHandshake)
	}
	if fake.raw == nil || len(fake.raw.bytes()) == 0 {
		t.Fatal("the fake agent saw no ClientHello: the test proves nothing")
	}
	if bytes.Contains(fake.raw.bytes(), []byte(testToken)) {
		t.Error("the token crossed the wire to an agent with another key")
	}
}

// The same fake agent, pinned, gets the Hello and its token inside TLS,
// and never on the wire in clear: the test above tells a client that
// sends nothing from a fake that could not have seen anything.
func TestRightPinSendsTheTokenOnlyInsideTLS(t *testing.T) {
	key := agenttest.Key(t)
	fp, err := tunneltls.FingerprintOf(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	fake := startFakeAgent(t, key)
	_, err = client.Dial(ctxTimeout(t, 20*time.Second), client.Options{Address: fake.addr, Token: testToken,
		Fingerprint: fp.String(), CommunicationTimeout: 10 * time.Second})
	if err == nil {
		t.Fatal("Dial succeeded against an agent that hangs up after the Hello")
	}
	fake.wait(t)
	if fake.handshakeErr != nil || !bytes.Contains(fake.afterHandshake, []byte(testToken)) {
		t.Fatalf("pinned fake agent: handshake %v, got %q inside TLS; want the Hello with the token", fake.handshakeErr, fake.afterHandshake)
	}
	if bytes.Contains(fake.raw.bytes(), []byte(testToken)) {
		t.Error("the token crossed the wire in clear")
	}
}

// A client without a pin that reaches an agent serving TLS is told so by
// the agent, with what to do.
func TestClientInClearAgainstTLSAgentFailsClearly(t *testing.T) {
	a := startAgent(t, agent.Options{TLSKey: agenttest.Key(t)})
	_, err := client.Dial(ctxTimeout(t, 20*time.Second), client.Options{Address: a.Addr(), Token: testToken, CommunicationTimeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "serves TLS") || !strings.Contains(err.Error(), "--agent-fingerprint") {
		t.Errorf("Dial in clear to a TLS agent: %v; want the agent's refusal saying it serves TLS and to pin its key", err)
	}
	t.Logf("the error: %v", err)
}

// A client that pins a key and reaches an agent in clear says the agent
// does not serve TLS.
func TestPinnedClientAgainstAgentInClearFailsClearly(t *testing.T) {
	a := startAgent(t, agent.Options{})
	fp := startAgent(t, agent.Options{TLSKey: agenttest.Key(t)}).Fingerprint()
	_, err := client.Dial(ctxTimeout(t, 20*time.Second), client.Options{Address: a.Addr(), Token: testToken, Fingerprint: fp, CommunicationTimeout: 10 * time.Second})
	if !errors.Is(err, client.ErrAgentWithoutTLS) || !strings.Contains(err.Error(), "--tls-key") {
		t.Errorf("pinned Dial to an agent in clear: %v; want ErrAgentWithoutTLS naming --tls-key", err)
	}
	t.Logf("the error: %v", err)
}

// A fingerprint that is not one is an error naming the option.
func TestBadFingerprintIsAnOptionError(t *testing.T) {
	_, err := client.Dial(context.Background(), client.Options{Address: "127.0.0.1:1", Token: testToken, Fingerprint: "md5:abc"})
	if err == nil || !strings.Contains(err.Error(), "Fingerprint") || !strings.Contains(err.Error(), `"md5:abc"`) {
		t.Errorf("bad fingerprint: %v; want an error naming Fingerprint and the value", err)
	}
}
