package router_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/router/routertest"
)

// These tests run the router on routertest's in-memory link, with a second
// gVisor stack standing in for the sandbox's kernel, so the router's flow
// logic, policy and DNS run without root. The real TUN is covered by the
// sandbox's tests.

// start runs a router with rules; the host side's resolver knows app-db.test.
func start(t *testing.T, rules policy.Rules, tweak func(*router.Config)) *routertest.App {
	t.Helper()
	cfg := router.Config{
		Policy:        routertest.Policy(t, rules),
		LocalResolver: routertest.LocalResolver(t, "127.0.0.1 localhost\n127.0.0.1 app-db.test\n"),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	return routertest.Start(t, cfg)
}

// hostLoopback is the host's 127.0.0.1:port, as the app dials it (the
// harness sends it through the sandbox's loopback alias).
func hostLoopback(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
}

func TestLocalRuleReachesHostLoopback(t *testing.T) {
	p := routertest.EchoTCP(t).Port()
	app := start(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{":" + itoa(p)}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := app.DialTCP(ctx, hostLoopback(p))
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("uwu "), 100000)
	go func() {
		c.Write(msg)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo returned %d bytes, want %d", len(got), len(msg))
	}
	recs := app.WaitFlows(1)
	r := recs[0]
	if r.Route != "local" || r.Dst != "127.0.0.1:"+itoa(p) || r.BytesOut != int64(len(msg)) || r.BytesIn != int64(len(msg)) {
		t.Fatalf("flow record %+v", r)
	}
	if !strings.Contains(r.Rule, ":"+itoa(p)) {
		t.Fatalf("rule %q does not name the entry", r.Rule)
	}
}

// TestHostSocketsGetKeepAliveOnceTheFlowLasts: the router's host socket of
// a local flow has no keepalive while the flow is young (short connections
// spare the system calls) and gets it once the flow has lasted.
func TestHostSocketsGetKeepAliveOnceTheFlowLasts(t *testing.T) {
	p := routertest.EchoTCP(t).Port()
	app := start(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{":" + itoa(p)}}, nil)
	netnstest.CheckKeepAliveOnceItLasts(t, p, router.SetKeepAliveAfter, func(ctx context.Context) (io.Closer, error) {
		return app.DialTCP(ctx, hostLoopback(p))
	})
}

func TestHostLoopbackIsPrivateByDefault(t *testing.T) {
	p := routertest.EchoTCP(t).Port()
	app := start(t, policy.Rules{TCP: true, UDP: true}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := app.DialTCP(ctx, hostLoopback(p))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to the host's loopback without a rule: %v, want refused", err)
	}
}

func TestBlockRefusesAtOnce(t *testing.T) {
	p := routertest.EchoTCP(t).Port()
	app := start(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{":" + itoa(p)}, Block: []string{"tcp://:" + itoa(p)}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := app.DialTCP(ctx, hostLoopback(p))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("blocked dial: %v", err)
	}
	t.Logf("refused after %v", time.Since(start))
	recs := app.WaitFlows(1)
	if recs[0].Route != "block" {
		t.Fatalf("record %+v", recs[0])
	}
}

func TestClosedPortIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close() // now closed
	app := start(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = app.DialTCP(ctx, hostLoopback(p))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to a closed port: %v, want refused", err)
	}
}

func TestSilentDestinationTimesOut(t *testing.T) {
	// A dial that never completes must leave the app waiting (its own
	// timeout), not refused.
	app := start(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true}, func(c *router.Config) {
		c.DialLocal = func(ctx context.Context, _, _ string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := app.DialTCP(ctx, hostLoopback(9))
	if err == nil || strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to a silent destination: %v, want the app's own timeout", err)
	}
}

func TestRemoteWithoutAgentIsRefused(t *testing.T) {
	app := start(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := app.DialTCP(ctx, netip.MustParseAddrPort("10.9.9.9:80"))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("remote dial without agent: %v", err)
	}
	recs := app.WaitFlows(1)
	if recs[0].Route != "remote" || !strings.Contains(recs[0].Error, "no agent") {
		t.Fatalf("record %+v", recs[0])
	}
}

func TestDNSFromHostsAndFlowHostname(t *testing.T) {
	p := routertest.EchoTCP(t).Port()
	app := start(t, policy.Rules{TCP: true, UDP: true, DNSEnabled: true, HaveRemote: true, Local: []string{"app-db.test"}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := app.Query(ctx, "udp", "app-db.test.", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Fatalf("answer %v", m)
	}
	// Over TCP too.
	m, err = app.Query(ctx, "tcp", "app-db.test.", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Answer) != 1 {
		t.Fatalf("tcp answer %v", m)
	}
	// The app dials the loopback address it got (through the NAT alias):
	// the hostname rule matches it through the DNS server's memory.
	c, err := app.DialTCP(ctx, hostLoopback(p))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	recs := app.WaitFlows(1)
	if recs[0].Host != "app-db.test" || recs[0].Route != "local" {
		t.Fatalf("record %+v", recs[0])
	}
}

func TestUDPEchoAndBlockedUDP(t *testing.T) {
	echo := routertest.EchoUDP(t)
	app := start(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true, Block: []string{"udp://:9"}}, nil)
	c, err := app.DialUDP(echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("echo %d: %q %v", i, buf[:n], err)
		}
	}
	// Blocked UDP: the app learns at once (ICMP port unreachable).
	bc, err := app.DialUDP(hostLoopback(9))
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	bc.Write([]byte("x"))
	// The test's app is a netstack, whose reader an ICMP error does not
	// wake (a kernel's is): read once the router has refused the flow.
	routertest.Eventually(func() bool {
		return slices.ContainsFunc(app.Flows(), func(r router.FlowRecord) bool { return r.Route == "block" })
	})
	bc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = bc.Read(make([]byte, 10))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("blocked UDP read: %v, want connection refused", err)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
