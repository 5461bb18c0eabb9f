package router_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/agenttest"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/router/routertest"
)

// These tests cover the router's remote branches (dials and DNS through the
// agent) with routertest.Remote in the agent's place: no root, no agent
// (but for a burst of UDP, which goes through an in-process agent).

// everythingRemote is mirrord's default: no filter, an agent configured.
var everythingRemote = policy.Rules{TCP: true, UDP: true, DNSEnabled: true, HaveRemote: true}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), routertest.WaitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantRecord checks every field of a flow record. Start and End are
// checked for order only; the rest must be exactly want's.
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

func TestRemoteTCPFlowIsDialedThroughTheAgent(t *testing.T) {
	for _, dst := range []netip.AddrPort{
		netip.MustParseAddrPort("10.96.0.10:8080"),
		netip.MustParseAddrPort("[fd00:10:96::a]:443"),
	} {
		t.Run(dst.String(), func(t *testing.T) {
			pod := routertest.EchoTCP(t) // the pod's peer
			remote := &routertest.Remote{TCP: routertest.DialHost("tcp", pod)}
			rules := everythingRemote
			rules.Remote = []string{"tcp://10.96.0.0/12", "tcp://[fd00:10:96::]/112"}
			app := routertest.Start(t, router.Config{Policy: routertest.Policy(t, rules), Remote: remote})

			c, err := app.DialTCP(testContext(t), dst)
			if err != nil {
				t.Fatalf("the app's dial to %s: %v", dst, err)
			}
			src := c.LocalAddr().String()
			msg := bytes.Repeat([]byte("uwu "), 50000)
			go func() {
				_, _ = c.Write(msg)
				_ = c.CloseWrite()
			}()
			_ = c.SetReadDeadline(time.Now().Add(routertest.WaitTimeout))
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo through the remote route: %d bytes, %v; want %d bytes back", len(got), err, len(msg))
			}
			if calls, want := remote.Calls(), []routertest.Call{{Method: "DialTCP", Dst: dst}}; !reflect.DeepEqual(calls, want) {
				t.Errorf("the agent was asked %+v, want %+v", calls, want)
			}
			rule := "remote tcp://10.96.0.0/12"
			if dst.Addr().Is6() {
				rule = "remote tcp://[fd00:10:96::]/112"
			}
			wantRecord(t, app.WaitFlows(1)[0], router.FlowRecord{
				Proto: "tcp", Src: src, Dst: dst.String(), Route: "remote", Rule: rule,
				BytesOut: int64(len(msg)), BytesIn: int64(len(msg)),
			})
		})
	}
}

func TestRemoteUDPFlowIsDialedThroughTheAgent(t *testing.T) {
	pod := routertest.EchoUDP(t)
	remote := &routertest.Remote{UDP: routertest.DialHost("udp", pod)}
	app := routertest.Start(t, router.Config{Policy: routertest.Policy(t, everythingRemote), Remote: remote})
	dst := netip.MustParseAddrPort("10.96.0.10:5353")
	c, err := app.DialUDP(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := c.LocalAddr().String()
	total := 0
	for _, d := range []string{"one", "", "three datagrams, boundaries kept"} {
		if _, err := c.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(routertest.WaitTimeout))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != d {
			t.Fatalf("echo of %q through the remote route: %q, %v", d, buf[:n], err)
		}
		total += len(d)
	}
	if calls, want := remote.Calls(), []routertest.Call{{Method: "DialUDP", Dst: dst}}; !reflect.DeepEqual(calls, want) {
		t.Errorf("the agent was asked %+v, want one DialUDP to %s", calls, dst)
	}
	// A UDP flow ends when idle or when the router stops; then it is logged.
	app.Router.Close()
	wantRecord(t, app.WaitFlows(1)[0], router.FlowRecord{
		Proto: "udp", Src: src, Dst: dst.String(), Route: "remote", Rule: "default",
		BytesOut: int64(total), BytesIn: int64(total),
	})
}

func TestRemoteNameIsResolvedByTheAgentAndNamesItsFlow(t *testing.T) {
	const name = "uwu-service.default.svc.cluster.local."
	service := netip.MustParseAddr("10.96.0.10")
	pod := routertest.EchoTCP(t)
	remote := &routertest.Remote{
		TCP: routertest.DialHost("tcp", pod),
		DNS: func(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
			m := new(dns.Msg)
			m.SetReply(q)
			if q.Question[0].Name != name || q.Question[0].Qtype != dns.TypeA {
				m.Rcode = dns.RcodeNameError
				return m, nil
			}
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: service.AsSlice()}}
			return m, nil
		},
	}
	// Without the cache, so that each query reaches the agent.
	app := routertest.Start(t, router.Config{Policy: routertest.Policy(t, everythingRemote), Remote: remote, NoDNSCache: true})
	ctx := testContext(t)
	for _, network := range []string{"udp", "tcp"} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		m, err := app.Exchange(ctx, network, q)
		if err != nil {
			t.Fatalf("query over %s: %v", network, err)
		}
		if m.Id != q.Id || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("answer over %s: %v", network, m)
		}
		if a, ok := m.Answer[0].(*dns.A); !ok || a.Hdr.Name != name || !a.A.Equal(service.AsSlice()) {
			t.Fatalf("answer over %s: %v, want %s A %s", network, m.Answer[0], name, service)
		}
	}
	calls := remote.Calls()
	if len(calls) != 2 {
		t.Fatalf("the agent was asked %d times, want one Exchange per query: %+v", len(calls), calls)
	}
	for _, c := range calls {
		want := []dns.Question{{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET}}
		if c.Method != "Exchange" || !reflect.DeepEqual(c.Query.Question, want) {
			t.Errorf("the agent was asked %s %v, want Exchange %v", c.Method, c.Query.Question, want)
		}
	}

	// The app dials the address it got: the flow carries the name.
	dst := netip.AddrPortFrom(service, 8080)
	c, err := app.DialTCP(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	src := c.LocalAddr().String()
	c.Close()
	wantRecord(t, app.WaitFlows(1)[0], router.FlowRecord{
		Proto: "tcp", Src: src, Dst: dst.String(), Host: strings.TrimSuffix(name, "."), Route: "remote", Rule: "default",
	})
}

// TestRemoteDialErrorsReachTheApp: the app sees a remote failure as it
// would see the same failure natively — a refusal or an unreachable host
// as a reset, a timeout as silence — and the flow log says what failed.
func TestRemoteDialErrorsReachTheApp(t *testing.T) {
	for _, c := range []struct {
		name    string
		err     error
		refused bool // the app's dial is reset; otherwise it runs into its own timeout
	}{
		{"refused", fmt.Errorf("pod: dial tcp: %w", syscall.ECONNREFUSED), true},
		{"host unreachable", fmt.Errorf("pod: dial tcp: %w", syscall.EHOSTUNREACH), true},
		{"timeout", fmt.Errorf("pod: dial tcp: %w", os.ErrDeadlineExceeded), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			remote := &routertest.Remote{TCP: func(context.Context, netip.AddrPort) (net.Conn, error) { return nil, c.err }}
			app := routertest.Start(t, router.Config{Policy: routertest.Policy(t, everythingRemote), Remote: remote})
			dst := netip.MustParseAddrPort("10.96.0.10:8080")
			// The app's own timeout; a refusal comes long before it.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			conn, err := app.DialTCP(ctx, dst)
			if err == nil {
				conn.Close()
				t.Fatal("the app's dial succeeded although the agent's failed")
			}
			if refused := strings.Contains(err.Error(), "refused"); refused != c.refused {
				t.Fatalf("the app's dial failed with %v; want refused %v", err, c.refused)
			}
			if !c.refused && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
				t.Fatalf("the app's dial failed with %v, want its own timeout", err)
			}
			rec := app.WaitFlows(1)[0]
			wantRecord(t, rec, router.FlowRecord{
				Proto: "tcp", Src: rec.Src, Dst: dst.String(), Route: "remote", Rule: "default", Error: c.err.Error(),
			})
			if ap, err := netip.ParseAddrPort(rec.Src); err != nil || ap.Addr() != routertest.AppAddr4 {
				t.Errorf("flow record src %q, want the app's address %s", rec.Src, routertest.AppAddr4)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestRemoteUDPDialErrorIsLoggedAndTheAppHearsNothing(t *testing.T) {
	dialErr := fmt.Errorf("pod: dial udp: %w", syscall.ENETUNREACH)
	remote := &routertest.Remote{UDP: func(context.Context, netip.AddrPort) (net.Conn, error) { return nil, dialErr }}
	app := routertest.Start(t, router.Config{Policy: routertest.Policy(t, everythingRemote), Remote: remote})
	dst := netip.MustParseAddrPort("10.96.0.10:5353")
	c, err := app.DialUDP(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := c.LocalAddr().String()
	if _, err := c.Write([]byte("anyone?")); err != nil {
		t.Fatal(err)
	}
	wantRecord(t, app.WaitFlows(1)[0], router.FlowRecord{
		Proto: "udp", Src: src, Dst: dst.String(), Route: "remote", Rule: "default", Error: dialErr.Error(),
	})
	if calls := remote.Calls(); len(calls) == 0 || calls[0] != (routertest.Call{Method: "DialUDP", Dst: dst}) {
		t.Errorf("the agent was asked %+v, want DialUDP to %s", calls, dst)
	}
	// As a datagram lost on the way: no answer and no ICMP error (which
	// would fail the read with "refused"); the app's own deadline ends it.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 10)); !isTimeout(err) {
		t.Fatalf("the app's read after a failed remote dial = %d bytes, %v; want its own timeout", n, err)
	}
}

// TestRemoteAnswersAreKeptForTheirTTL: a name asked again within its TTL
// is answered without the agent, with the asker's ID and spelling and the
// TTL left; an answer with TTL 0, a failure, or one whose TTL ran out is
// asked for again.
func TestRemoteAnswersAreKeptForTheirTTL(t *testing.T) {
	const (
		cached  = "uwu-service.default.svc.cluster.local."
		zeroTTL = "zero.default.svc.cluster.local."
		missing = "missing.default.svc.cluster.local."
		liar    = "liar.default.svc.cluster.local." // answered as another name
	)
	service := netip.MustParseAddr("10.96.0.10")
	pod := routertest.EchoTCP(t)
	remote := &routertest.Remote{
		TCP: routertest.DialHost("tcp", pod),
		DNS: func(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
			m := new(dns.Msg)
			m.SetReply(q)
			name := strings.ToLower(q.Question[0].Name)
			switch name {
			case liar:
				m.Question = []dns.Question{{Name: cached, Qtype: dns.TypeA, Qclass: dns.ClassINET}}
				m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: cached, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: service.AsSlice()}}
			case cached, zeroTTL:
				ttl := uint32(1)
				if name == zeroTTL {
					ttl = 0
				}
				m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: service.AsSlice()}}
			default: // NXDOMAIN without a SOA: nothing says how long to keep it
				m.Rcode = dns.RcodeNameError
			}
			return m, nil
		},
	}
	app := routertest.Start(t, router.Config{Policy: routertest.Policy(t, everythingRemote), Remote: remote})
	ctx := testContext(t)
	exchanges := func() int {
		n := 0
		for _, c := range remote.Calls() {
			if c.Method == "Exchange" {
				n++
			}
		}
		return n
	}
	ask := func(network, name string) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		m, err := app.Exchange(ctx, network, q)
		if err != nil {
			t.Fatalf("%s over %s: %v", name, network, err)
		}
		if m.Id != q.Id || !reflect.DeepEqual(m.Question, q.Question) {
			t.Fatalf("answer to %v (id %d): question %v, id %d", q.Question, q.Id, m.Question, m.Id)
		}
		return m
	}

	ask("udp", cached)
	// Over TCP and spelled otherwise: the same question to a resolver.
	m := ask("tcp", strings.ToUpper(cached))
	if n := exchanges(); n != 1 {
		t.Fatalf("the agent was asked %d times for one name within its TTL, want once", n)
	}
	if len(m.Answer) != 1 || m.Answer[0].Header().Ttl > 1 || !m.Answer[0].(*dns.A).A.Equal(service.AsSlice()) {
		t.Fatalf("answer from the cache: %v, want %s A %s with TTL ≤ 1", m.Answer, cached, service)
	}
	if s := app.Router.Stats(); s.DNSCached != 1 || s.DNSQueries != 2 {
		t.Errorf("stats: %d of %d queries cached, want 1 of 2", s.DNSCached, s.DNSQueries)
	}
	// An answer from the cache still names the address's flows.
	c, err := app.DialTCP(ctx, netip.AddrPortFrom(service, 8080))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if rec := app.WaitFlows(1)[0]; rec.Host != strings.TrimSuffix(cached, ".") {
		t.Errorf("flow after a cached answer: host %q, want %q", rec.Host, strings.TrimSuffix(cached, "."))
	}

	for _, name := range []string{zeroTTL, missing} {
		before := exchanges()
		ask("udp", name)
		ask("udp", name)
		if n := exchanges() - before; n != 2 {
			t.Errorf("%s asked twice: the agent was asked %d times, want 2 (nothing to keep)", name, n)
		}
	}

	// An answer to another question is passed on but not kept.
	before := exchanges()
	for range 2 {
		q := new(dns.Msg)
		q.SetQuestion(liar, dns.TypeA)
		if _, err := app.Exchange(ctx, "udp", q); err != nil {
			t.Fatal(err)
		}
	}
	if n := exchanges() - before; n != 2 {
		t.Errorf("a name answered as another was asked %d times in two queries, want 2 (never kept)", n)
	}

	time.Sleep(1100 * time.Millisecond) // the cached name's TTL of 1 s runs out
	before = exchanges()
	ask("udp", cached)
	if n := exchanges() - before; n != 1 {
		t.Errorf("after its TTL the name was answered without the agent (%d exchanges)", n)
	}
}

func TestRemoteDNSFailureIsServerFailure(t *testing.T) {
	remote := &routertest.Remote{DNS: func(context.Context, *dns.Msg) (*dns.Msg, error) {
		return nil, fmt.Errorf("pod: resolver: %w", os.ErrDeadlineExceeded)
	}}
	app := routertest.Start(t, router.Config{Policy: routertest.Policy(t, everythingRemote), Remote: remote})
	m, err := app.Query(testContext(t), "udp", "uwu-service.default.svc.cluster.local", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 {
		t.Fatalf("answer when the agent fails: %v, want SERVFAIL", m)
	}
	if calls := remote.Calls(); len(calls) != 1 || calls[0].Method != "Exchange" {
		t.Errorf("the agent was asked %+v, want one Exchange", calls)
	}
}

// TestRemoteUDPBurstThroughARealTunnel: datagrams the app sends faster than
// the router passes them on leave in batches (one tunnel write for what
// queued); each still reaches the pod's server, and comes back, whole.
func TestRemoteUDPBurstThroughARealTunnel(t *testing.T) {
	a := agenttest.Start(t, agent.Options{})
	c := agenttest.Dial(t, a.Addr(), client.Options{})
	pod := routertest.EchoUDP(t)
	remote := &routertest.Remote{UDP: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
		return c.DialUDP(ctx, pod)
	}}
	app := routertest.Start(t, router.Config{Policy: routertest.Policy(t, everythingRemote), Remote: remote})
	conn, err := app.DialUDP(netip.MustParseAddrPort("10.96.0.10:5353"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 64 datagrams of 0 to ~1000 bytes, ~32 KiB in all: far below every
	// socket buffer on the way, so none is dropped.
	const count = 64
	sent := map[string]bool{}
	for i := range count {
		d := fmt.Sprintf("%02d:%s", i, strings.Repeat("x", i*15))
		sent[d] = true
		if _, err := conn.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	for range count {
		_ = conn.SetReadDeadline(time.Now().Add(routertest.WaitTimeout))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("%d echoes still missing: %v", len(sent), err)
		}
		if !sent[string(buf[:n])] {
			t.Fatalf("echo %q is none of the datagrams sent (or came twice)", buf[:n])
		}
		delete(sent, string(buf[:n]))
	}
}
