package connect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/agenttest"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/config"
)

// steps records what Connect reports.
type steps struct {
	mu    sync.Mutex
	lines []string
}

func (s *steps) Step(what string) func(error) {
	return func(err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.lines = append(s.lines, fmt.Sprintf("step %s: %v", what, err))
	}
}

func (s *steps) Note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, "note "+fmt.Sprintf(format, args...))
}

func (s *steps) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// runAgent serves a real agent with a TLS key on loopback until the test
// ends and returns its address and fingerprint.
func runAgent(t *testing.T, token string) (addr, fingerprint string) {
	t.Helper()
	a := agenttest.Start(t, agent.Options{Token: token, TLSKey: agenttest.Key(t),
		ResolvConfPath: agenttest.WriteFile(t, "resolv.conf", "nameserver 127.0.0.1\nsearch ns1.svc.cluster.local svc.cluster.local\noptions ndots:5\n")})
	return a.Addr(), a.Fingerprint()
}

// tokenFile writes lines (the token, and maybe the fingerprint) to a file.
func tokenFile(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNoAgentNoTargetIsNoRun(t *testing.T) {
	run, err := Connect(context.Background(), Options{Config: &config.Config{}, Progress: &steps{}})
	if run != nil || err != nil {
		t.Errorf("Connect without address or target = %v, %v; want nil, nil", run, err)
	}
}

// The token file's second line pins the agent's key.
func TestDirectAgentConnects(t *testing.T) {
	addr, fp := runAgent(t, "s3cret")
	cfg := &config.Config{}
	cfg.Agent.CommunicationTimeout = 5
	p := &steps{}
	run, err := Connect(context.Background(), Options{Config: cfg, Address: addr, TokenFile: tokenFile(t, "s3cret", fp), Progress: p})
	if err != nil {
		t.Fatalf("Connect: %v\n%s", err, p)
	}
	defer run.Close()
	if run.Client == nil || len(run.Env) != 0 {
		t.Fatalf("run = %+v; want a client and no environment (no target)", run)
	}
	f := run.Client.Facts()
	if want := []string{"ns1.svc.cluster.local", "svc.cluster.local"}; strings.Join(f.SearchDomains, " ") != strings.Join(want, " ") || f.Ndots != 5 {
		t.Errorf("facts = %+v; want the agent's resolv.conf search %v and ndots 5", f, want)
	}
	if _, err := run.Client.Ping(context.Background()); err != nil {
		t.Errorf("ping through the tunnel: %v", err)
	}
	want := "step connected to agent at " + addr + ": <nil>"
	if !strings.Contains(p.String(), want) {
		t.Errorf("progress:\n%s\nwant a line %q", p, want)
	}
}

func TestFlagAddressWinsOverTheFile(t *testing.T) {
	cfg := &config.Config{}
	cfg.Agent.Address = "10.0.0.9:7777"
	if got := Address(Options{Config: cfg, Address: "127.0.0.1:1"}); got != "127.0.0.1:1" {
		t.Errorf("Address = %s, want the flag's", got)
	}
	if got := Address(Options{Config: cfg}); got != "10.0.0.9:7777" {
		t.Errorf("Address = %s, want the file's", got)
	}
}

func TestWrongTokenIsRefused(t *testing.T) {
	addr, fp := runAgent(t, "right")
	cfg := &config.Config{}
	cfg.Agent.CommunicationTimeout = 5
	_, err := Connect(context.Background(), Options{Config: cfg, Address: addr, TokenFile: tokenFile(t, "wrong"), Fingerprint: fp, Progress: &steps{}})
	if !errors.Is(err, client.ErrTokenRefused) || !strings.Contains(err.Error(), addr) {
		t.Errorf("wrong token: %v; want ErrTokenRefused naming %s", err, addr)
	}
}

func TestNoTokenStopsBeforeDialing(t *testing.T) {
	t.Setenv(proto.EnvToken, "")
	p := &steps{}
	_, err := Connect(context.Background(), Options{Config: &config.Config{}, Address: "127.0.0.1:1", Progress: p})
	if err == nil || !strings.Contains(err.Error(), proto.EnvToken) {
		t.Errorf("no token: %v; want an error naming %s", err, proto.EnvToken)
	}
	if p.String() != "" {
		t.Errorf("progress before the token was found:\n%s", p)
	}
}

// Without a pin (or --agent-insecure) the run stops before it dials: the
// token goes nowhere, and the error says where to get the fingerprint.
func TestNoFingerprintStopsBeforeDialing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	p := &steps{}
	_, err = Connect(context.Background(), Options{Config: &config.Config{}, Address: ln.Addr().String(), TokenFile: tokenFile(t, "s3cret"), Progress: p})
	ln.Close()
	if !errors.Is(err, ErrNoFingerprint) || !strings.Contains(err.Error(), "trafficpolice agent fingerprint --tls-key") || !strings.Contains(err.Error(), "--agent-insecure") {
		t.Errorf("no fingerprint: %v; want ErrNoFingerprint saying how to get one and naming --agent-insecure", err)
	}
	select {
	case <-accepted:
		t.Error("the client connected to the agent's address without a pin")
	default:
	}
	if p.String() != "" {
		t.Errorf("progress without a pin:\n%s", p)
	}
}

// The flag's fingerprint wins over agent.fingerprint; the file's alone
// pins too, and a wrong one is a mismatch naming both keys.
func TestConfigFingerprintPinsAndTheFlagWins(t *testing.T) {
	addr, fp := runAgent(t, "s3cret")
	other := agenttest.Start(t, agent.Options{TLSKey: agenttest.Key(t)}).Fingerprint()
	cfg := &config.Config{}
	cfg.Agent.CommunicationTimeout = 5
	cfg.Agent.Fingerprint = other
	_, err := Connect(context.Background(), Options{Config: cfg, Address: addr, TokenFile: tokenFile(t, "s3cret"), Progress: &steps{}})
	if !errors.Is(err, client.ErrFingerprintMismatch) || !strings.Contains(err.Error(), fp) || !strings.Contains(err.Error(), other) {
		t.Errorf("agent.fingerprint of another key: %v; want ErrFingerprintMismatch naming %s and %s", err, fp, other)
	}
	run, err := Connect(context.Background(), Options{Config: cfg, Address: addr, TokenFile: tokenFile(t, "s3cret"), Fingerprint: fp, Progress: &steps{}})
	if err != nil {
		t.Fatalf("the flag's fingerprint over the file's: %v", err)
	}
	run.Close()
}

// --agent-insecure connects in clear to an agent without TLS, and says
// what that exposes; with a pin as well it is an error.
func TestInsecureConnectsInClearWithAWarning(t *testing.T) {
	addr := agenttest.Start(t, agent.Options{Token: "s3cret"}).Addr()
	cfg := &config.Config{}
	cfg.Agent.CommunicationTimeout = 5
	p := &steps{}
	run, err := Connect(context.Background(), Options{Config: cfg, Address: addr, TokenFile: tokenFile(t, "s3cret"), Insecure: true, Progress: p})
	if err != nil {
		t.Fatalf("Connect --agent-insecure to an agent without TLS: %v", err)
	}
	run.Close()
	if !strings.Contains(p.String(), "WARNING: --agent-insecure") || !strings.Contains(p.String(), "in clear") {
		t.Errorf("progress:\n%s\nwant a warning that the tunnel is in clear", p)
	}
	cfg.Agent.Fingerprint = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
	if _, err := Connect(context.Background(), Options{Config: cfg, Address: addr, TokenFile: tokenFile(t, "s3cret"), Insecure: true, Progress: &steps{}}); err == nil || !strings.Contains(err.Error(), "drop one") {
		t.Errorf("--agent-insecure with a fingerprint: %v; want an error", err)
	}
}

// A fingerprint that is not one is an error naming where it came from.
func TestBadFingerprintNamesItsSource(t *testing.T) {
	_, err := Connect(context.Background(), Options{Config: &config.Config{}, Address: "127.0.0.1:1",
		TokenFile: tokenFile(t, "s3cret", "sha256:short"), Progress: &steps{}})
	if err == nil || !strings.Contains(err.Error(), "the token file's second line") || !strings.Contains(err.Error(), `"sha256:short"`) {
		t.Errorf("bad fingerprint in the token file: %v; want an error naming the file's second line and the value", err)
	}
}
