package incoming_test

// Tests of the nat rules an agent starts with, in a network namespace of
// the test's own: the sweep of dead agents' rules and the choice of
// backend.

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// TestSweepRemovesDeadAgentsRulesOfEitherBackend: an agent at start
// removes the rules of dead agents, whichever backend wrote them, and
// leaves a live agent's alone.
func TestSweepRemovesDeadAgentsRulesOfEitherBackend(t *testing.T) {
	netnstest.RequireRoot(t)
	requireCommands(t, "iptables", "iptables", "ip6tables", "iptables-save", "ip6tables-save")
	pod := newNetns(t)
	log := testLog(t)
	type agentRules struct {
		rules nat.Rules
		live  net.Listener
	}
	var all []agentRules
	for _, b := range []nat.Backend{nat.IPTables, nat.NFTables} {
		for _, alive := range []bool{false, true} {
			var a agentRules
			err := inNS(pod, func() (err error) {
				id := randomTestID(t)
				if alive {
					if a.live, err = nat.HoldLiveness(id, nil); err != nil {
						return err
					}
				}
				if a.rules, err = nat.New(b, id, 40001, 40002, log); err != nil {
					return err
				}
				return a.rules.Add(8080)
			})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, a)
			t.Cleanup(func() {
				_ = inNS(pod, a.rules.Close)
				if a.live != nil {
					a.live.Close()
				}
			})
		}
	}
	var removed []string
	if err := inNS(pod, func() (err error) {
		removed, err = nat.SweepStale(randomTestID(t), log)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ipt := strings.Join(listAgentRules(t, pod, nat.IPTables), "\n")
	nft := strings.Join(listAgentRules(t, pod, nat.NFTables), "\n")
	for _, a := range all {
		inState := strings.Contains(ipt+nft, a.rules.Name())
		if a.live == nil && inState {
			t.Errorf("the dead agent's %s is still there:\n%s\n%s", a.rules.Where(), ipt, nft)
		}
		if a.live != nil && !inState {
			t.Errorf("the live agent's %s was removed", a.rules.Where())
		}
	}
	if len(removed) != 4 { // iptables and ip6tables chains, ip and ip6 tables
		t.Errorf("sweep removed %v, want the dead agents' two chains and two tables", removed)
	}
}

func randomTestID(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func TestNATBackendChoice(t *testing.T) {
	for _, c := range []struct {
		in   string
		want nat.Backend
	}{{"", nat.Auto}, {"auto", nat.Auto}, {"NFTables", nat.NFTables}, {" iptables ", nat.IPTables}} {
		if got, err := nat.ParseBackend(c.in); err != nil || got != c.want {
			t.Errorf("nat.ParseBackend(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := nat.ParseBackend("pf"); err == nil || !strings.Contains(err.Error(), `"pf" is not a nat backend: use auto, iptables or nftables`) {
		t.Errorf("nat.ParseBackend(pf): %v", err)
	}

	netnstest.RequireRoot(t)
	requireCommands(t, "iptables", "iptables", "ip6tables")
	pod := newNetns(t)
	choose := func(choice nat.Backend) (nat.Rules, error) {
		var r nat.Rules
		err := inNS(pod, func() (err error) {
			r, err = nat.New(choice, randomTestID(t), 40001, 40002, testLog(t))
			return err
		})
		return r, err
	}
	if r, err := choose(nat.Auto); err != nil || r.Kind() != nat.IPTables {
		t.Errorf("auto where iptables works: %v, %v; want iptables", r, err)
	}
	// The agent's image: no iptables binary anywhere.
	t.Setenv("PATH", t.TempDir())
	if r, err := choose(nat.Auto); err != nil || r.Kind() != nat.NFTables {
		t.Errorf("auto without iptables: %v, %v; want nftables", r, err)
	}
	if _, err := choose(nat.IPTables); err == nil || !strings.Contains(err.Error(), "iptables") {
		t.Errorf("iptables forced where it is missing: %v, want an error naming iptables", err)
	}
	if r, err := choose(nat.NFTables); err != nil || r.Kind() != nat.NFTables {
		t.Errorf("nftables forced: %v, %v", r, err)
	}
}
