package policy

import (
	"net/netip"
	"reflect"
	"testing"
)

func mustNew(t *testing.T, r Rules) *Policy {
	t.Helper()
	r.TCP, r.UDP = true, true
	if r.DNSLocal == nil && r.DNSRemote == nil {
		r.DNSEnabled = true
	}
	p, err := New(r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func flow(proto Proto, dst string, host string) Flow {
	return Flow{Proto: proto, Dst: netip.MustParseAddrPort(dst), Host: host}
}

func TestDecide(t *testing.T) {
	type check struct {
		f     Flow
		route Route
		rule  string
	}
	cases := []struct {
		name   string
		rules  Rules
		checks []check
	}{
		{"no filter: everything remote, loopback to the pod", Rules{HaveRemote: true}, []check{
			{flow(TCP, "10.0.0.1:80", ""), Remote, "default"},
			{flow(TCP, "127.0.0.1:8888", ""), Remote, "default"},
			{flow(UDP, "[::1]:53", ""), Remote, "default"},
		}},
		{"seed: local :8888", Rules{HaveRemote: true, Local: []string{":8888"}}, []check{
			{flow(TCP, "127.0.0.1:8888", ""), Local, "local :8888"},
			{flow(TCP, "10.96.0.5:8888", "messages-db"), Local, "local :8888"},
			{flow(TCP, "10.96.0.7:80", "uwu-service"), Remote, "default: not in the local filter"},
			{flow(TCP, "127.0.0.1:9000", ""), Remote, "default: not in the local filter"},
		}},
		{"seed: local app-db by name", Rules{HaveRemote: true, Local: []string{"app-db"}}, []check{
			{flow(TCP, "192.168.1.9:5432", "app-db"), Local, "local app-db"},
			{flow(TCP, "192.168.1.9:5432", "APP-DB."), Local, "local app-db"},
			{flow(TCP, "192.168.1.9:5432", "app-db.example.org"), Remote, "default: not in the local filter"},
			{flow(TCP, "10.96.0.7:80", "uwu-service"), Remote, "default: not in the local filter"},
		}},
		{"remote list: the rest local, loopback too", Rules{HaveRemote: true, Remote: []string{"tcp://10.0.0.0/8", "uwu-service"}}, []check{
			{flow(TCP, "10.1.2.3:80", ""), Remote, "remote tcp://10.0.0.0/8"},
			{flow(UDP, "10.1.2.3:53", ""), Local, "default: not in the remote filter"},
			{flow(TCP, "172.16.0.1:80", "uwu-service"), Remote, "remote uwu-service"},
			{flow(TCP, "127.0.0.1:5432", ""), Local, "default: not in the remote filter"},
		}},
		{"block wins over local", Rules{HaveRemote: true, Local: []string{"prod-db"}, Block: []string{"prod-db", "tcp://:25"}}, []check{
			{flow(TCP, "10.0.0.1:5432", "prod-db"), Block, "block prod-db"},
			{flow(TCP, "10.0.0.9:25", ""), Block, "block tcp://:25"},
			{flow(UDP, "10.0.0.9:25", ""), Remote, "default: not in the local filter"},
		}},
		{"ignore_localhost sends loopback to the host", Rules{HaveRemote: true, IgnoreLocalhost: true}, []check{
			{flow(TCP, "127.0.0.1:8888", ""), Local, "ignore_localhost"},
			{flow(TCP, "[::1]:8888", ""), Local, "ignore_localhost"},
			{flow(TCP, "10.0.0.1:80", ""), Remote, "default"},
		}},
		{"no agent: default local, loopback not", Rules{}, []check{
			{flow(TCP, "10.0.0.1:80", ""), Local, "default (no agent or target: local)"},
			{flow(TCP, "127.0.0.1:80", ""), Remote, "default"},
		}},
		{"localhost rule matches loopback addresses", Rules{HaveRemote: true, Local: []string{"localhost:5432"}}, []check{
			{flow(TCP, "127.0.0.1:5432", ""), Local, "local localhost:5432"},
			{flow(TCP, "[::1]:5432", ""), Local, "local localhost:5432"},
			{flow(TCP, "127.0.0.1:5433", ""), Remote, "default: not in the local filter"},
		}},
		{"protocol and IPv6 prefix", Rules{HaveRemote: true, Local: []string{"udp://[fd00::]/8:53"}}, []check{
			{flow(UDP, "[fd12::1]:53", ""), Local, "local udp://[fd00::]/8:53"},
			{flow(TCP, "[fd12::1]:53", ""), Remote, "default: not in the local filter"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustNew(t, c.rules)
			for _, ch := range c.checks {
				d := p.Decide(ch.f)
				if d.Route != ch.route || d.Rule != ch.rule {
					t.Errorf("Decide(%v %v host=%q) = %v, want %v (%s)", ch.f.Proto, ch.f.Dst, ch.f.Host, d, ch.route, ch.rule)
				}
			}
		})
	}
}

func TestAppsOwnPortStaysInSandbox(t *testing.T) {
	p := mustNew(t, Rules{HaveRemote: true, IgnoreLocalhost: true, Block: []string{":9999"}})
	f := flow(TCP, "127.0.0.1:9999", "")
	f.AppListens = true
	if d := p.Decide(f); d.Route != Sandbox {
		t.Fatalf("got %v", d)
	}
	// Only loopback: the same port elsewhere follows the rules.
	f = flow(TCP, "10.0.0.1:9999", "")
	f.AppListens = true
	if d := p.Decide(f); d.Route != Block {
		t.Fatalf("got %v", d)
	}
}

func TestOutgoingDisabledGoesLocal(t *testing.T) {
	p, err := New(Rules{HaveRemote: true, TCP: false, UDP: true, DNSEnabled: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(flow(TCP, "10.0.0.1:80", "")); d.Route != Local {
		t.Fatalf("tcp: %v", d)
	}
	if d := p.Decide(flow(UDP, "10.0.0.1:80", "")); d.Route != Remote {
		t.Fatalf("udp: %v", d)
	}
}

func TestSearchDomainExpansionMatchesRule(t *testing.T) {
	p := mustNew(t, Rules{HaveRemote: true, Local: []string{"app-db"}})
	p.SetSearchDomains([]string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"})
	d := p.ResolveSide("app-db.default.svc.cluster.local.")
	if d.Route != Local || d.Name != "app-db" {
		t.Fatalf("ResolveSide = %+v, want local, resolving the bare name", d)
	}
	if d := p.Decide(flow(TCP, "10.0.0.1:8888", "app-db.svc.cluster.local")); d.Route != Local {
		t.Fatalf("Decide = %v", d)
	}
	// Not a search domain: a different name.
	if d := p.ResolveSide("app-db.example.org"); d.Route != Remote {
		t.Fatalf("ResolveSide = %+v", d)
	}
}

func TestAnyNameOfTheAddressMatchesHostnameRules(t *testing.T) {
	p := mustNew(t, Rules{HaveRemote: true, Local: []string{"app-db"}, Block: []string{"prod-db:5432"}})
	p.SetSearchDomains([]string{"default.svc.cluster.local"})
	f := flow(TCP, "192.0.2.7:5432", "")
	if d := p.Decide(f); d.Route != Remote {
		t.Fatalf("an address without names: %v, want the default", d)
	}
	f.Names = []string{"app-db"}
	if d := p.Decide(f); d.Route != Local || d.Rule != "local app-db" {
		t.Fatalf("an address that app-db stands for: %v, want local by the rule", d)
	}
	// The app asked for an alias; the address is prod-db's too: the block wins.
	f.Host, f.Names = "reports", []string{"app-db", "prod-db.default.svc.cluster.local", "reports"}
	if d := p.Decide(f); d.Route != Block || d.Rule != "block prod-db:5432" {
		t.Fatalf("an address that prod-db stands for, asked as an alias: %v, want blocked", d)
	}
	f.Dst = netip.MustParseAddrPort("192.0.2.7:80")
	if d := p.Decide(f); d.Route != Local {
		t.Fatalf("the block rule's port does not match: %v, want local by app-db", d)
	}
}

func TestRuleNamesAreResolvedWhereTheRuleSendsThem(t *testing.T) {
	p := mustNew(t, Rules{HaveRemote: true, Local: []string{"app-db", "tcp://app-db:5432", "localhost:8080", ":9", "10.0.0.0/8"},
		Block: []string{"prod-db", "APP-DB."}})
	want := map[string]NameSides{
		"app-db":  {Local: true, Remote: true},
		"prod-db": {Local: true, Remote: true},
	}
	if got := p.RuleNames(); !reflect.DeepEqual(got, want) {
		t.Fatalf("RuleNames = %v, want %v", got, want)
	}
	p = mustNew(t, Rules{HaveRemote: true, Remote: []string{"uwu-service"}})
	if got := p.RuleNames(); !reflect.DeepEqual(got, map[string]NameSides{"uwu-service": {Remote: true}}) {
		t.Fatalf("RuleNames = %v, want uwu-service in the cluster only", got)
	}
}

func TestResolveSide(t *testing.T) {
	cases := []struct {
		name  string
		rules Rules
		q     string
		route Route
	}{
		{"default remote", Rules{HaveRemote: true, DNSEnabled: true}, "uwu-service", Remote},
		{"no agent local", Rules{DNSEnabled: true}, "uwu-service", Local},
		{"dns false", Rules{HaveRemote: true}, "uwu-service", Local},
		{"outgoing local name", Rules{HaveRemote: true, DNSEnabled: true, Local: []string{"app-db:5432"}}, "app-db", Local},
		{"outgoing remote name", Rules{HaveRemote: true, DNSEnabled: false, Remote: []string{"uwu-service"}}, "uwu-service", Remote},
		{"dns local filter", Rules{HaveRemote: true, DNSEnabled: true, DNSLocal: []string{"mylocal.test"}}, "mylocal.test", Local},
		{"dns local filter, other name", Rules{HaveRemote: true, DNSEnabled: true, DNSLocal: []string{"mylocal.test"}}, "other.test", Remote},
		{"dns remote filter, other name", Rules{HaveRemote: true, DNSEnabled: true, DNSRemote: []string{"svc.cluster"}}, "example.com", Local},
		{"outgoing rule beats dns false", Rules{HaveRemote: true, Remote: []string{"db"}}, "DB.", Remote},
	}
	for _, c := range cases {
		c.rules.TCP, c.rules.UDP = true, true
		p, err := New(c.rules)
		if err != nil {
			t.Fatal(err)
		}
		if d := p.ResolveSide(c.q); d.Route != c.route {
			t.Errorf("%s: ResolveSide(%q) = %+v, want %v", c.name, c.q, d, c.route)
		}
	}
}

func TestICMPMatchesOnlyPortlessAnyProtocolRules(t *testing.T) {
	p := mustNew(t, Rules{HaveRemote: true, Block: []string{"tcp://10.0.0.0/8", ":7", "10.1.0.0/16"}})
	f := Flow{Proto: ICMP, Dst: netip.AddrPortFrom(netip.MustParseAddr("10.2.0.1"), 0)}
	if d := p.Decide(f); d.Route != Remote {
		t.Fatalf("tcp:// and port rules must not match ICMP: %v", d)
	}
	f.Dst = netip.AddrPortFrom(netip.MustParseAddr("10.1.2.3"), 0)
	if d := p.Decide(f); d.Route != Block {
		t.Fatalf("an address rule must match ICMP: %v", d)
	}
}
