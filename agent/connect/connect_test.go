package connect

import (
	"context"
	"errors"
	"fmt"
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

// runAgent serves a real agent on loopback until the test ends and returns
// its address.
func runAgent(t *testing.T, token string) string {
	t.Helper()
	return agenttest.Start(t, agent.Options{Token: token,
		ResolvConfPath: agenttest.WriteFile(t, "resolv.conf", "nameserver 127.0.0.1\nsearch ns1.svc.cluster.local svc.cluster.local\noptions ndots:5\n")}).Addr()
}

func tokenFile(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
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

func TestDirectAgentConnects(t *testing.T) {
	addr := runAgent(t, "s3cret")
	cfg := &config.Config{}
	cfg.Agent.CommunicationTimeout = 5
	p := &steps{}
	run, err := Connect(context.Background(), Options{Config: cfg, Address: addr, TokenFile: tokenFile(t, "s3cret"), Progress: p})
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
	addr := runAgent(t, "right")
	cfg := &config.Config{}
	cfg.Agent.CommunicationTimeout = 5
	_, err := Connect(context.Background(), Options{Config: cfg, Address: addr, TokenFile: tokenFile(t, "wrong"), Progress: &steps{}})
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
