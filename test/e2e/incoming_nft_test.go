package e2e

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/vishvananda/netns"
)

// nftRules is the agent tables in the target pod, as nat.ListNFTables
// describes them: one line per rule, "" when there is none.
func (w *incomingWorld) nftRules(t *testing.T) string {
	t.Helper()
	h, err := netns.GetFromPath(w.target.NamespacePath())
	if err != nil {
		t.Fatalf("open the target pod's network namespace: %v", err)
	}
	defer h.Close()
	lines, err := nat.ListNFTables(int(h))
	if err != nil {
		t.Fatalf("list the target pod's nftables: %v", err)
	}
	return strings.Join(lines, "\n")
}

// TestIncomingTrafficWithNFTables runs steal and mirror with an agent that
// writes its rules over nf_tables netlink (`--nat-backend nftables`, what
// the agent image does, having no iptables binary): the rules are tables
// of the agent's own, not iptables chains, and they go when the run ends.
func TestIncomingTrafficWithNFTables(t *testing.T) {
	w := newIncomingWorld(t)
	if err := w.agent.Stop(); err != nil {
		t.Fatal(err)
	}
	w.agent = w.target.Start(t, w.agentArgs(fmt.Sprintf("0.0.0.0:%d", agentPort), "--nat-backend", "nftables"))
	w.agent.WaitOutput(t, "incoming traffic ready", 10*time.Second)
	contains(t, w.agent.Output(), "nat_backend=nftables")
	tagApp := func(addr, tag string) []string { return []string{w.tags, addr, tag} }
	incoming := func(t *testing.T, mode string) []string {
		return []string{"-f", writeConfig(t, `{"feature":{"network":{"incoming":`+mode+`}}}`)}
	}
	wantNoTables := func(t *testing.T) {
		t.Helper()
		if rules := w.nftRules(t); rules != "" {
			t.Errorf("the pod still has the agent's nftables:\n%s", rules)
		}
		w.wantNoRules(t)
	}
	wantNoTables(t)

	t.Run("steal: the sandboxed app answers; open connections stay with the pod; the pod gets its port back", func(t *testing.T) {
		before, err := w.client.DialContext(context.Background(), "tcp", w.podURL)
		if err != nil {
			t.Fatal(err)
		}
		defer before.Close()
		beforeR := bufio.NewReader(before)
		wantAnswer(t, exchange(t, before, beforeR, "GET", "/before"), "pod GET /before")

		r := w.start(t, "steal", nil, incoming(t, `"steal"`), tagApp(fmt.Sprintf("127.0.0.1:%d", stolenPort), "local")...)
		r.waitStderr(t, fmt.Sprintf("✓ stealing pod port %d → app :%d", stolenPort, stolenPort), 20*time.Second)
		rules := w.nftRules(t)
		for _, hook := range []string{"prerouting", "output"} {
			for _, fam := range []string{"ip", "ip6"} {
				want := fmt.Sprintf(" %s (nat hook %s priority -100): tcp dport %d syn fib daddr type local redirect to :", hook, hook, stolenPort)
				if !strings.Contains(rules, fam+" "+nat.ChainPrefix) || !strings.Contains(rules, want) {
					t.Errorf("no %s %s redirect of port %d in the pod's nftables:\n%s", fam, hook, stolenPort, rules)
				}
			}
		}
		if ipt := w.natRules(t); strings.Contains(ipt, nat.ChainPrefix) {
			t.Errorf("the nftables backend wrote iptables chains:\n%s", ipt)
		}
		wantAnswer(t, w.get(t, "GET", w.podURL, "/from-client"), "local GET /from-client")
		conn, err := w.target.DialContext(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", stolenPort))
		if err != nil {
			t.Fatal(err)
		}
		wantAnswer(t, exchange(t, conn, bufio.NewReader(conn), "GET", "/from-pod"), "local GET /from-pod")
		conn.Close()
		wantAnswer(t, exchange(t, before, beforeR, "GET", "/still"), "pod GET /still")
		wantAnswer(t, w.get(t, "GET", fmt.Sprintf("%s:%d", w.target.IP(), otherPort), "/x"), "pod2 GET /x")

		r.stop(t)
		contains(t, r.stdout.String(), "local got GET /from-client")
		contains(t, r.stdout.String(), "local got GET /from-pod")
		wantAnswer(t, w.get(t, "GET", w.podURL, "/after"), "pod GET /after")
		wantNoTables(t)
	})

	t.Run("header filter: requests for the pod's app pass the rules by the agent's mark", func(t *testing.T) {
		r := w.start(t, "header", nil, incoming(t, `{"mode":"steal","http_filter":{"header_filter":"^x-user: alice$"}}`),
			tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
		r.waitStderr(t, fmt.Sprintf("✓ stealing pod port %d", stolenPort), 20*time.Second)
		conn, err := w.client.DialContext(context.Background(), "tcp", w.podURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		wantAnswer(t, exchange(t, conn, br, "GET", "/1", "X-User", "alice"), "local GET /1")
		wantAnswer(t, exchange(t, conn, br, "GET", "/2"), "pod GET /2")
		wantAnswer(t, exchange(t, conn, br, "GET", "/3", "X-User", "alice"), "local GET /3")
		r.stop(t)
		wantNoTables(t)
	})

	t.Run("mirror: the pod answers every request and the local app gets each one", func(t *testing.T) {
		r := w.start(t, "mirror", nil, incoming(t, `"mirror"`), tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
		r.waitStderr(t, fmt.Sprintf("✓ mirroring pod port %d → app :%d", stolenPort, stolenPort), 20*time.Second)
		if rules := w.nftRules(t); !strings.Contains(rules, fmt.Sprintf("tcp dport %d syn", stolenPort)) {
			t.Errorf("no redirect of port %d in the pod's nftables:\n%s", stolenPort, rules)
		}
		for i := range 4 {
			path := fmt.Sprintf("/m/%d", i)
			wantAnswer(t, w.get(t, "GET", w.podURL, path), "pod GET "+path)
		}
		waitFor(t, func() bool { return strings.Count(r.stdout.String(), "local got") == 4 }, 10*time.Second,
			func() string { return "the local app's copies:\n" + r.stdout.String() })
		for i := range 4 {
			contains(t, r.stdout.String(), fmt.Sprintf("local got GET /m/%d", i))
		}
		r.stop(t)
		wantNoTables(t)
	})

	t.Run("the agent's SIGTERM removes its tables", func(t *testing.T) {
		r := w.start(t, "sigterm", nil, incoming(t, `"steal"`), tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
		r.waitStderr(t, fmt.Sprintf("✓ stealing pod port %d", stolenPort), 20*time.Second)
		if w.nftRules(t) == "" {
			t.Fatal("no table of the agent while stealing")
		}
		if err := w.agent.Stop(); err != nil {
			t.Fatal(err)
		}
		wantNoTables(t)
		wantAnswer(t, w.get(t, "GET", w.podURL, "/agent-gone"), "pod GET /agent-gone")
		r.stop(t)
	})

	t.Run("auto without an iptables binary picks nftables", func(t *testing.T) {
		// The pod's shell needs its PATH; the agent gets an empty one.
		a := w.target.Start(t, append([]string{"env", "PATH=" + t.TempDir()}, w.agentArgs(fmt.Sprintf("127.0.0.1:%d", agentPort+2))...))
		a.WaitOutput(t, "incoming traffic ready", 10*time.Second)
		contains(t, a.Output(), "nat_backend=nftables")
		if err := a.Stop(); err != nil {
			t.Fatal(err)
		}
		wantNoTables(t)
	})
}
