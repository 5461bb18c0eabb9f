package router_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/routertest"
)

// These tests prove that a rule naming a host matches every address the name
// stands for, on the side the rule sends it to, however the app got the
// address: an IP literal, an alias of the same address, the name itself.

var podSearch = []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}

// clusterDNS answers like a cluster's DNS with records: full name → addresses
// (A only); every other name is NXDOMAIN.
func clusterDNS(records map[string][]netip.Addr) func(context.Context, *dns.Msg) (*dns.Msg, error) {
	return func(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		addrs, ok := records[strings.TrimSuffix(name, ".")]
		if !ok {
			m.Rcode = dns.RcodeNameError
			return m, nil
		}
		if q.Question[0].Qtype == dns.TypeA {
			for _, a := range addrs {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: a.AsSlice()})
			}
		}
		return m, nil
	}
}

// hostDials records the local route's dials and refuses them: nothing
// leaves the process, and the test sees what went local.
type hostDials struct {
	mu  sync.Mutex
	dst []string
}

func (h *hostDials) dial(_ context.Context, _, address string) (net.Conn, error) {
	h.mu.Lock()
	h.dst = append(h.dst, address)
	h.mu.Unlock()
	return nil, syscall.ECONNREFUSED
}

func (h *hostDials) dials() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.dst...)
}

// dialOnce dials dst from the app, closes what it got, and returns the
// flow's record.
func dialOnce(t *testing.T, app *routertest.App, dst netip.AddrPort) (router.FlowRecord, error) {
	t.Helper()
	before := len(app.Flows())
	c, err := app.DialTCP(testContext(t), dst)
	if err == nil {
		c.Close()
	}
	return app.WaitFlows(before + 1)[before], err
}

func TestBlockedNameIsBlockedByIPLiteralAliasAndHostSideAddress(t *testing.T) {
	prodDB := netip.MustParseAddr("10.96.0.5")     // prod-db in the cluster
	hostProdDB := netip.MustParseAddr("192.0.2.9") // prod-db as the host resolves it
	other := netip.MustParseAddr("10.96.0.6")
	pod := routertest.EchoTCP(t)
	remote := &routertest.Remote{
		TCP: routertest.DialHost("tcp", pod),
		DNS: clusterDNS(map[string][]netip.Addr{
			"prod-db.default.svc.cluster.local": {prodDB},
			"reports.default.svc.cluster.local": {prodDB}, // another service, the same address
			"other.default.svc.cluster.local":   {other},
		}),
	}
	rules := everythingRemote
	rules.Block = []string{"prod-db"}
	pol := routertest.Policy(t, rules)
	pol.SetSearchDomains(podSearch)
	local := &hostDials{}
	app := routertest.Start(t, router.Config{
		Policy: pol, Remote: remote, SearchDomains: podSearch, DialLocal: local.dial,
		LocalResolver: routertest.LocalResolver(t, "127.0.0.1 localhost\n"+hostProdDB.String()+" prod-db\n"),
	})

	t.Run("IP literal", func(t *testing.T) {
		rec, err := dialOnce(t, app, netip.AddrPortFrom(prodDB, 5432))
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("the app's dial to prod-db's address: %v, want refused", err)
		}
		if rec.Route != "block" || rec.Rule != "block prod-db" || rec.Host != "prod-db" {
			t.Fatalf("flow record %+v, want blocked by \"block prod-db\", host prod-db", rec)
		}
	})
	t.Run("alias of the same address", func(t *testing.T) {
		m, err := app.Query(testContext(t), "udp", "reports.default.svc.cluster.local", dns.TypeA)
		if err != nil || len(m.Answer) != 1 {
			t.Fatalf("query for the alias: %v %v", m, err)
		}
		addr, _ := netip.AddrFromSlice(m.Answer[0].(*dns.A).A)
		rec, err := dialOnce(t, app, netip.AddrPortFrom(addr, 5432))
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("the app's dial to the alias's address %s: %v, want refused", addr, err)
		}
		if rec.Route != "block" || rec.Rule != "block prod-db" || rec.Host != "reports.default.svc.cluster.local" {
			t.Fatalf("flow record %+v, want blocked by \"block prod-db\", host the alias the app asked for", rec)
		}
	})
	t.Run("the host's address for the name", func(t *testing.T) {
		rec, err := dialOnce(t, app, netip.AddrPortFrom(hostProdDB, 5432))
		if err == nil || rec.Route != "block" || rec.Rule != "block prod-db" {
			t.Fatalf("the app's dial to prod-db's host-side address: %v, record %+v; want blocked by \"block prod-db\"", err, rec)
		}
	})
	t.Run("another address is not", func(t *testing.T) {
		rec, err := dialOnce(t, app, netip.AddrPortFrom(other, 5432))
		if err != nil || rec.Route != "remote" || rec.Rule != "default" {
			t.Fatalf("the app's dial to another service: %v, record %+v; want it remote by default", err, rec)
		}
	})
	if d := local.dials(); len(d) != 0 {
		t.Errorf("flows went local: %v", d)
	}
}

func TestRemoteRuleRoutesItsNamesAddressesWhateverTheAppDialed(t *testing.T) {
	svc := netip.MustParseAddr("10.96.0.7")
	pod := routertest.EchoTCP(t)
	remote := &routertest.Remote{
		TCP: routertest.DialHost("tcp", pod),
		DNS: clusterDNS(map[string][]netip.Addr{"uwu-service.default.svc.cluster.local": {svc}}),
	}
	rules := everythingRemote
	rules.Remote = []string{"uwu-service:8080"}
	local := &hostDials{}
	app := routertest.Start(t, router.Config{
		Policy: routertest.Policy(t, rules), Remote: remote, SearchDomains: podSearch, DialLocal: local.dial,
	})
	rec, err := dialOnce(t, app, netip.AddrPortFrom(svc, 8080))
	if err != nil || rec.Route != "remote" || rec.Rule != "remote uwu-service:8080" || rec.Host != "uwu-service" {
		t.Fatalf("the app's dial to uwu-service's address by literal: %v, record %+v; want remote by the rule", err, rec)
	}
	// The rule's port still counts: another port of the address is not it.
	rec, _ = dialOnce(t, app, netip.AddrPortFrom(svc, 9090))
	if rec.Route != "local" {
		t.Fatalf("record %+v: want local, not in the remote filter", rec)
	}
	if d := local.dials(); len(d) != 1 {
		t.Errorf("local dials %v, want the one to port 9090", d)
	}
}

func TestLocalRuleNameResolvesOnTheHostAndMatchesByAddress(t *testing.T) {
	echo := routertest.EchoTCP(t)
	// The cluster knows the name as well, elsewhere: a local rule's name
	// is the host's.
	remote := &routertest.Remote{DNS: clusterDNS(map[string][]netip.Addr{"app-db.test": {netip.MustParseAddr("10.96.0.9")}})}
	rules := everythingRemote
	rules.Local = []string{"app-db.test"}
	app := routertest.Start(t, router.Config{
		Policy: routertest.Policy(t, rules), Remote: remote, SearchDomains: podSearch,
		LocalResolver: routertest.LocalResolver(t, "127.0.0.1 localhost\n127.0.0.1 app-db.test\n"),
	})
	// The app dials the host's address for app-db.test without asking the
	// sandbox's DNS (its own resolver, a literal in its config).
	rec, err := dialOnce(t, app, hostLoopback(echo.Port()))
	if err != nil || rec.Route != "local" || rec.Rule != "local app-db.test" || rec.Host != "app-db.test" {
		t.Fatalf("the app's dial to app-db.test's host address: %v, record %+v; want local by the rule", err, rec)
	}
	for _, c := range remote.Calls() {
		t.Errorf("the agent was asked %s: a local rule's name is resolved on the host", c)
	}
}
