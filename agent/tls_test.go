package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/agent/tunneltls"
)

func testKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// partialClientHello connects and sends the start of a TLS handshake
// record that promises more than it sends, then nothing.
func partialClientHello(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// Record type handshake, version 3.1, length 512; then 4 bytes of a
	// ClientHello header.
	if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc}); err != nil {
		t.Fatal(err)
	}
	return c
}

// hungUp waits (bounded) for the agent to close c.
func hungUp(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		n, err := c.Read(make([]byte, 4096))
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return
		}
		if err != nil {
			t.Fatalf("%s: read %d bytes, %v; want the agent to hang up", what, n, err)
		}
	}
}

// A peer that stalls the TLS handshake, or finishes it and never sends
// its Hello, is dropped after HandshakeTimeout and gives its place back.
func TestStalledTLSHandshakeIsDroppedAfterTheHandshakeTimeout(t *testing.T) {
	key := testKey(t)
	s := newTestServer(t, Options{TLSKey: key, HandshakeTimeout: 200 * time.Millisecond, CommunicationTimeout: time.Minute})
	addr := serve(t, s)

	stalled := partialClientHello(t, addr)
	defer stalled.Close()
	hungUp(t, stalled, "a peer that stalls its ClientHello")

	fp, err := tunneltls.FingerprintOf(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, tunneltls.ClientConfig(fp))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatalf("TLS handshake with the agent: %v", err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := tc.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("a peer silent after the TLS handshake: read %d bytes, %v; want the agent to hang up", n, err)
	}
	waitPending(t, s, 0)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Peers stalled in the TLS handshake hold the same capped places as peers
// stalled in their Hello: beyond MaxPendingHandshakes a new connection is
// closed at once, and a pinned client gets in once a place is free.
func TestStalledTLSHandshakesAreCapped(t *testing.T) {
	key := testKey(t)
	fp, err := tunneltls.FingerprintOf(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Options{TLSKey: key, HandshakeTimeout: time.Minute})
	addr := serve(t, s)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range MaxPendingHandshakes {
		conns = append(conns, partialClientHello(t, addr))
	}
	waitPending(t, s, MaxPendingHandshakes)
	extra := partialClientHello(t, addr)
	defer extra.Close()
	hungUp(t, extra, "a connection beyond the cap")
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cl, err := client.Dial(ctx, client.Options{Address: addr, Token: "s3cret", Fingerprint: fp.String(), CommunicationTimeout: 10 * time.Second})
		if err == nil {
			cl.Close()
		}
		return err
	}
	if err := dial(); err == nil {
		t.Fatal("a client got in while every place was taken")
	}
	conns[0].Close()
	waitPending(t, s, MaxPendingHandshakes-1)
	if err := dial(); err != nil {
		t.Fatalf("a pinned client could not connect once a place was free: %v", err)
	}
}

// A Hello in clear to an agent that serves TLS gets a refusal that says
// what to do, and the agent's log says why.
func TestHelloInClearToATLSAgentIsRefused(t *testing.T) {
	addr, logs := startServer(t, Options{Token: "s3cret", TLSKey: testKey(t), ResolvConfPath: writeTemp(t, "resolv.conf", "")})
	m, _ := hello(t, addr, proto.Hello{Version: proto.Version, Token: "s3cret"})
	r, ok := m.(proto.Refused)
	if !ok || r.Reason != RefusedPlainReason {
		t.Fatalf("answer to a Hello in clear: %#v; want Refused saying the agent serves TLS", m)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "spoke without TLS"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent's log does not say why:\n%s", logs.String())
		}
	}
}

// The agent logs its fingerprint at start, so that its operator can hand
// it to clients.
func TestAgentLogsItsFingerprint(t *testing.T) {
	key := testKey(t)
	fp, err := tunneltls.FingerprintOf(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	s := newTestServer(t, Options{TLSKey: key})
	s.log = slogTo(logs)
	got, ok := s.Fingerprint()
	if !ok || got != fp {
		t.Errorf("Fingerprint() = %s, %v; want %s", got, ok, fp)
	}
	s.LogListening(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 7777})
	if !strings.Contains(logs.String(), fp.String()) {
		t.Errorf("log at start:\n%s\nwant the fingerprint %s", logs, fp)
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
