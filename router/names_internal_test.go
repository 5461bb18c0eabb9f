package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

func TestAnAddressCarriesEveryNameItStandsFor(t *testing.T) {
	tab := newNameTable()
	a := netip.MustParseAddr("10.96.0.5")
	tab.record(a, "prod-db", policy.Remote, ruled, 5*time.Second)
	tab.record(a, "reports.default.svc.cluster.local", policy.Remote, asked, 30*time.Second)
	tab.record(netip.MustParseAddr("::ffff:10.96.0.5"), "billing", policy.Remote, asked, 30*time.Second)
	v := tab.lookup(a)
	want := []string{"billing", "prod-db", "reports.default.svc.cluster.local"}
	if !reflect.DeepEqual(v.names, want) {
		t.Fatalf("names of %s = %v, want %v", a, v.names, want)
	}
	// The host is the name the app asked for last: "billing".
	if v.host != "billing" || v.side != policy.Remote {
		t.Fatalf("host of %s = %q (%v), want the last asked name, billing", a, v.host, v.side)
	}
	if v := tab.lookup(netip.MustParseAddr("10.96.0.6")); v.host != "" || v.names != nil {
		t.Fatalf("an unknown address has names: %+v", v)
	}
}

func TestAnswersCannotCrowdOutARuleName(t *testing.T) {
	tab := newNameTable()
	a := netip.MustParseAddr("192.0.2.1")
	tab.record(a, "prod-db", policy.Local, ruled, time.Minute)
	for i := range maxAnswerNamesPerAddr + 10 {
		tab.record(a, fmt.Sprintf("n%d.wildcard.example", i), policy.Local, asked, time.Minute)
	}
	v := tab.lookup(a)
	if len(v.names) != maxAnswerNamesPerAddr+1 {
		t.Fatalf("%d names, want the %d most recent answers and the rule's name", len(v.names), maxAnswerNamesPerAddr)
	}
	found := false
	for _, n := range v.names {
		found = found || n == "prod-db"
	}
	if !found {
		t.Fatalf("the rule's name was dropped: %v", v.names)
	}
}

func TestCNAMEChainNamesStandForTheAddress(t *testing.T) {
	r := &Router{names: newNameTable()}
	a := netip.MustParseAddr("10.96.0.8")
	rr := func(s string) dns.RR {
		x, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	m := &dns.Msg{Answer: []dns.RR{
		rr("www.example.org. 60 IN CNAME edge.example.org."),
		rr("edge.example.org. 60 IN CNAME prod-db.default.svc.cluster.local."),
		rr("prod-db.default.svc.cluster.local. 5 IN A 10.96.0.8"),
		rr("unrelated.example.org. 60 IN CNAME elsewhere.example.org."),
	}}
	r.remember("WWW.example.org.", policy.Remote, m)
	v := r.names.lookup(a)
	want := []string{"edge.example.org", "prod-db.default.svc.cluster.local", "www.example.org"}
	if !reflect.DeepEqual(v.names, want) || v.host != "www.example.org" {
		t.Fatalf("names of %s = %v (host %q), want %v and the asked name as host", a, v.names, v.host, want)
	}
	p, err := policy.New(policy.Rules{TCP: true, HaveRemote: true, Block: []string{"prod-db"}})
	if err != nil {
		t.Fatal(err)
	}
	p.SetSearchDomains([]string{"default.svc.cluster.local"})
	d := p.Decide(policy.Flow{Proto: policy.TCP, Dst: netip.AddrPortFrom(a, 5432), Host: v.host, Names: v.names})
	if d.Route != policy.Block {
		t.Fatalf("a flow to the end of a chain through prod-db: %v, want blocked", d)
	}
}

// flakyResolver answers name with addrs until failing is set, then fails
// every query as a resolver that went away.
type flakyResolver struct {
	addrs    map[string][]netip.Addr
	failing  bool
	failAAAA bool // only AAAA queries fail
}

func (f *flakyResolver) Exchange(_ context.Context, query []byte) ([]byte, error) {
	q := new(dns.Msg)
	if err := q.Unpack(query); err != nil {
		return nil, err
	}
	if f.failing || f.failAAAA && q.Question[0].Qtype == dns.TypeAAAA {
		return nil, errors.New("read udp 192.0.2.53:53: i/o timeout")
	}
	m := new(dns.Msg)
	m.SetReply(q)
	addrs, ok := f.addrs[q.Question[0].Name]
	if !ok {
		m.Rcode = dns.RcodeNameError
	}
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: q.Question[0].Name, Class: dns.ClassINET, Ttl: 120}
		switch {
		case a.Is4() && q.Question[0].Qtype == dns.TypeA:
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case a.Is6() && q.Question[0].Qtype == dns.TypeAAAA:
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return m.Pack()
}

func TestRuleNameKeepsItsLastGoodAddressesWhenResolutionFails(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("2001:db8::9")
	res := &flakyResolver{addrs: map[string][]netip.Addr{"prod-db.corp.example.": {v4, v6}}}
	r := &Router{
		ctx:   context.Background(),
		cfg:   Config{LocalResolver: res, HostSearchDomains: []string{"corp.example"}},
		names: newNameTable(),
		log:   slog.New(slog.DiscardHandler),
	}
	rn := &ruleName{name: "prod-db", side: policy.Local}
	// The name as written is NXDOMAIN; its search-domain form answers.
	wait := r.refreshRuleName(context.Background(), rn)
	if wait != refreshAfter(120*time.Second) {
		t.Errorf("next refresh in %s, want %s (the TTL less a margin)", wait, refreshAfter(120*time.Second))
	}
	for _, a := range []netip.Addr{v4, v6} {
		if v := r.names.lookup(a); !reflect.DeepEqual(v.names, []string{"prod-db"}) || v.host != "" {
			t.Fatalf("names of %s = %+v, want the rule name prod-db (not asked by the app)", a, v)
		}
	}
	res.failing = true
	wait = r.refreshRuleName(context.Background(), rn)
	if wait != ruleRefreshFloor || rn.failures != 1 {
		t.Errorf("after a failure: retry in %s (failures %d), want %s", wait, rn.failures, ruleRefreshFloor)
	}
	if !reflect.DeepEqual(rn.last, []netip.Addr{v4, v6}) {
		t.Fatalf("last good answer after a failure = %v, want %v", rn.last, []netip.Addr{v4, v6})
	}
	if v := r.names.lookup(v4); len(v.names) != 1 {
		t.Fatalf("names of %s after a failure = %v, want prod-db kept", v4, v.names)
	}
	if wait := r.refreshRuleName(context.Background(), rn); wait != 2*ruleRefreshFloor {
		t.Errorf("after a second failure: retry in %s, want %s", wait, 2*ruleRefreshFloor)
	}
	// A partial answer (AAAA fails) with a new address: it is added, and
	// nothing the name had is dropped.
	moved := netip.MustParseAddr("192.0.2.10")
	res.failing, res.failAAAA = false, true
	res.addrs["prod-db.corp.example."] = []netip.Addr{moved}
	r.refreshRuleName(context.Background(), rn)
	if want := []netip.Addr{v4, moved, v6}; !reflect.DeepEqual(rn.last, want) || rn.failures != 0 {
		t.Fatalf("after a partial answer: %v (failures %d), want %v", rn.last, rn.failures, want)
	}
	if v := r.names.lookup(moved); !reflect.DeepEqual(v.names, []string{"prod-db"}) {
		t.Fatalf("names of the new address %s = %v, want prod-db", moved, v.names)
	}
}

func TestRuleNameRefreshTiming(t *testing.T) {
	for _, c := range []struct{ ttl, want time.Duration }{
		{0, ruleRefreshFloor},
		{5 * time.Second, ruleRefreshFloor},
		{30 * time.Second, 27 * time.Second},
		{120 * time.Second, 108 * time.Second},
		{24 * time.Hour, ruleRefreshCeiling},
	} {
		if got := refreshAfter(c.ttl); got != c.want {
			t.Errorf("refreshAfter(%s) = %s, want %s", c.ttl, got, c.want)
		}
	}
	for failures, want := range map[int]time.Duration{1: ruleRefreshFloor, 2: 2 * ruleRefreshFloor, 3: 4 * ruleRefreshFloor, 50: ruleRefreshCeiling} {
		if got := retryAfter(failures); got != want {
			t.Errorf("retryAfter(%d) = %s, want %s", failures, got, want)
		}
	}
	// No gap between refreshes: a recorded name outlives the longest wait.
	if minNameLifetime <= ruleRefreshCeiling {
		t.Errorf("minNameLifetime %s must exceed ruleRefreshCeiling %s, or a rule's addresses lapse between refreshes", minNameLifetime, ruleRefreshCeiling)
	}
}
