package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/agenttest"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/router/routertest"
)

// The agent runs in this process's network namespace, so "the pod" is the
// host: its services are servers on a loopback address of their own.
var serviceAddr = netip.MustParseAddr("127.0.13.37")

const (
	serviceName = "uwu-service.default.svc.cluster.local."
	token       = "integration-token-0123456789"
)

// mirrordDefault routes everything, names included, through the agent.
var mirrordDefault = policy.Rules{TCP: true, UDP: true, DNSEnabled: true, HaveRemote: true}

// startAgent serves a real agent on a loopback port, with resolv.conf and
// hosts files of the test's, until the test ends; it returns its address.
func startAgent(t *testing.T, resolvConf, hosts string) string {
	t.Helper()
	return agenttest.Start(t, agent.Options{
		Token:          token,
		ResolvConfPath: agenttest.WriteFile(t, "resolv.conf", resolvConf),
		HostsPath:      agenttest.WriteFile(t, "hosts", hosts),
	}).Addr()
}

// startApp connects a tunnel client to the agent at addr and runs a router
// with it as its Remote; the app side is routertest's.
func startApp(t *testing.T, addr string) *routertest.App {
	t.Helper()
	c, err := client.Dial(context.Background(), client.Options{Address: addr, Token: token, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("connect to the agent: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return routertest.Start(t, router.Config{Policy: routertest.Policy(t, mirrordDefault), Remote: c})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), routertest.WaitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// resolveA asks the router's DNS for name's A record over network and
// returns the single address of the answer.
func resolveA(t *testing.T, app *routertest.App, network, name string) netip.Addr {
	t.Helper()
	m, err := app.Query(testContext(t), network, name, dns.TypeA)
	if err != nil {
		t.Fatalf("the app's query for %s over %s: %v", name, network, err)
	}
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("the app's query for %s over %s: %v, want one A record", name, network, m)
	}
	a, ok := m.Answer[0].(*dns.A)
	if !ok || a.Hdr.Name != name {
		t.Fatalf("the app's query for %s over %s: answer %v", name, network, m.Answer[0])
	}
	addr, _ := netip.AddrFromSlice(a.A)
	return addr.Unmap()
}

// wantRecord checks every field of a flow record; Start and End only for
// their order.
func wantRecord(t *testing.T, got, want router.FlowRecord) {
	t.Helper()
	if got.Start.IsZero() || got.End.Before(got.Start) {
		t.Errorf("flow record times: start %s, end %s", got.Start, got.End)
	}
	want.Start, want.End = got.Start, got.End
	if got != want {
		t.Errorf("flow record\n got %+v\nwant %+v", got, want)
	}
}

// TestAppReachesThePodThroughARealAgent joins the router to a real agent
// over loopback: the app's name is answered by the pod's hosts file (the
// router's own resolver knows only localhost), and its TCP and UDP flows
// to the answer reach the pod's servers through the tunnel.
func TestAppReachesThePodThroughARealAgent(t *testing.T) {
	echoTCP := routertest.EchoTCPOn(t, serviceAddr)
	echoUDP := routertest.EchoUDPOn(t, serviceAddr)
	addr := startAgent(t,
		"search default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
		fmt.Sprintf("127.0.0.1 localhost\n%s %s\n", serviceAddr, strings.TrimSuffix(serviceName, ".")))
	app := startApp(t, addr)

	svc := resolveA(t, app, "udp", serviceName)
	if svc != serviceAddr {
		t.Fatalf("%s resolved to %s, want %s from the pod's hosts file", serviceName, svc, serviceAddr)
	}

	dst := netip.AddrPortFrom(svc, echoTCP.Port())
	c, err := app.DialTCP(testContext(t), dst)
	if err != nil {
		t.Fatalf("the app's dial to %s: %v", dst, err)
	}
	src := c.LocalAddr().String()
	msg := bytes.Repeat([]byte("uwu through the agent "), 20000)
	go func() {
		_, _ = c.Write(msg)
		_ = c.CloseWrite()
	}()
	_ = c.SetReadDeadline(time.Now().Add(routertest.WaitTimeout))
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the agent: %d bytes, %v; want the %d bytes sent", len(got), err, len(msg))
	}
	wantRecord(t, app.WaitFlows(1)[0], router.FlowRecord{
		Proto: "tcp", Src: src, Dst: dst.String(), Host: strings.TrimSuffix(serviceName, "."),
		Route: "remote", Rule: "default", BytesOut: int64(len(msg)), BytesIn: int64(len(msg)),
	})

	udst := netip.AddrPortFrom(svc, echoUDP.Port())
	u, err := app.DialUDP(udst)
	if err != nil {
		t.Fatal(err)
	}
	usrc := u.LocalAddr().String()
	total := 0
	for _, d := range []string{"first", "second datagram", "third"} {
		if _, err := u.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
		_ = u.SetReadDeadline(time.Now().Add(routertest.WaitTimeout))
		buf := make([]byte, 100)
		n, err := u.Read(buf)
		if err != nil || string(buf[:n]) != d {
			t.Fatalf("UDP echo of %q through the agent: %q, %v", d, buf[:n], err)
		}
		total += len(d)
	}
	u.Close()
	// A UDP flow is logged when it ends: idle, or the router stopping.
	app.Router.Close()
	wantRecord(t, app.WaitFlows(2)[1], router.FlowRecord{
		Proto: "udp", Src: usrc, Dst: udst.String(), Host: strings.TrimSuffix(serviceName, "."),
		Route: "remote", Rule: "default", BytesOut: int64(total), BytesIn: int64(total),
	})
}

// TestRemoteNamesAreAnsweredByThePodsNameserver: a name the pod's hosts
// file does not know goes to the nameserver of the pod's resolv.conf, and
// its answer (or its "no such name") reaches the app whole.
func TestRemoteNamesAreAnsweredByThePodsNameserver(t *testing.T) {
	ns, asked := clusterDNS(t)
	addr := startAgent(t,
		fmt.Sprintf("search default.svc.cluster.local\nnameserver %s\noptions ndots:5 timeout:2 attempts:1\n", ns),
		"127.0.0.1 localhost\n")
	app := startApp(t, addr)
	for _, network := range []string{"udp", "tcp"} {
		if got := resolveA(t, app, network, serviceName); got != serviceAddr {
			t.Errorf("%s over %s resolved to %s, want %s from the pod's nameserver", serviceName, network, got, serviceAddr)
		}
	}
	for range 2 {
		m, err := app.Query(testContext(t), "udp", "nope.default.svc.cluster.local.", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if m.Rcode != dns.RcodeNameError {
			t.Errorf("an unknown name: %v, want NXDOMAIN from the pod's nameserver", m)
		}
	}
	// The second query for serviceName (over TCP) is answered from the
	// router's cache (TTL 30 s); the nameserver's NXDOMAIN has no SOA to
	// say how long it holds, so it is asked again.
	want := []string{serviceName, "nope.default.svc.cluster.local.", "nope.default.svc.cluster.local."}
	if got := asked(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the pod's nameserver was asked %q, want %q", got, want)
	}
}

// clusterDNS runs a DNS server for the pod's resolv.conf on port 53 (which
// resolv.conf cannot change) of a loopback address of its own, over UDP
// and TCP. It knows serviceName and answers NXDOMAIN for anything else;
// asked returns the names it was asked for, in order.
func clusterDNS(t *testing.T) (ip string, asked func() []string) {
	t.Helper()
	var mu sync.Mutex
	var names []string
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		mu.Lock()
		names = append(names, q.Name)
		mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(r)
		if q.Name == serviceName && q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: serviceAddr.AsSlice()}}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	for range 20 {
		ip := fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(100), rand.IntN(256), 1+rand.IntN(254))
		addr := net.JoinHostPort(ip, "53")
		pc, err := net.ListenPacket("udp", addr)
		if errors.Is(err, syscall.EACCES) {
			netnstest.Need(t, false, "this test runs a DNS server on port 53: it needs root or net.ipv4.ip_unprivileged_port_start <= 53")
		}
		if err != nil {
			continue // the address is taken: draw another
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			continue
		}
		udp, tcp := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h}
		for _, srv := range []*dns.Server{udp, tcp} {
			started, failed := make(chan struct{}), make(chan error, 1)
			srv.NotifyStartedFunc = func() { close(started) }
			go func() { failed <- srv.ActivateAndServe() }()
			select {
			case <-started:
			case err := <-failed:
				t.Fatalf("DNS server on %s: %v", addr, err)
			}
		}
		t.Cleanup(func() {
			_ = udp.Shutdown()
			_ = tcp.Shutdown()
		})
		return ip, func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), names...)
		}
	}
	t.Fatal("no free loopback address for a DNS server on port 53")
	return "", nil
}
