package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// These tests put a second gVisor stack (standing in for the sandbox's
// kernel) at the other end of an in-memory link, so the router's flow
// logic, policy and DNS run without root. The real TUN is covered by the
// sandbox's tests.

var (
	appAddr   = netip.MustParseAddr("198.18.0.2")
	dnsAddr   = netip.MustParseAddr("198.18.0.53")
	aliasBase = netip.MustParseAddr("198.19.0.0")
)

// loopbackAlias maps 198.19.0.0/16 back to 127.0.0.0/16, as the sandbox's
// NAT does.
func loopbackAlias(a netip.Addr) (netip.Addr, bool) {
	if !netip.PrefixFrom(aliasBase, 16).Contains(a) {
		return a, false
	}
	b := a.As4()
	return netip.AddrFrom4([4]byte{127, 0, b[2], b[3]}), true
}

type harness struct {
	app     *stack.Stack
	router  *Router
	flowLog *syncBuffer
	hosts   string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) records(t *testing.T) []FlowRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []FlowRecord
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var r FlowRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("flow log line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func newHarness(t *testing.T, rules policy.Rules, tweak func(*Config)) *harness {
	t.Helper()
	appEnd, routerEnd := pipe.New("", "", 65520)
	app := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	if err := app.CreateNIC(1, appEnd); err != nil {
		t.Fatal(err)
	}
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFrom4(appAddr.As4()).WithPrefix()}
	if err := app.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	app.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})

	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n127.0.0.1 app-db.test\n"), 0o644)
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644)

	pol, err := policy.New(rules)
	if err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	cfg := Config{
		Link:          routerEnd,
		Policy:        pol,
		LoopbackAlias: loopbackAlias,
		DNSAddrs:      []netip.Addr{dnsAddr},
		LocalResolver: NewHostResolver(resolv, hosts),
		FlowLog:       log,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		app.Close()
		app.Wait()
	})
	return &harness{app: app, router: r, flowLog: log, hosts: hosts}
}

func (h *harness) dialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return gonet.DialContextTCP(ctx, h.app, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(dst.Addr().As4()), Port: dst.Port()}, ipv4.ProtocolNumber)
}

// alias is the address the sandbox's NAT gives 127.0.0.1:port.
func alias(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("198.19.0.1"), port)
}

func echoServer(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.CloseWrite()
				c.Close()
			}()
		}
	}()
	return ln
}

func port(ln net.Listener) uint16 { return uint16(ln.Addr().(*net.TCPAddr).Port) }

func TestLocalRuleReachesHostLoopback(t *testing.T) {
	ln := echoServer(t)
	p := port(ln)
	h := newHarness(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{":" + itoa(p)}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := h.dialTCP(ctx, alias(p))
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("uwu "), 100000)
	go func() {
		c.Write(msg)
		c.(*gonet.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo returned %d bytes, want %d", len(got), len(msg))
	}
	recs := waitRecords(t, h.flowLog, 1)
	r := recs[0]
	if r.Route != "local" || r.Dst != "127.0.0.1:"+itoa(p) || r.BytesOut != int64(len(msg)) || r.BytesIn != int64(len(msg)) {
		t.Fatalf("flow record %+v", r)
	}
	if !strings.Contains(r.Rule, ":"+itoa(p)) {
		t.Fatalf("rule %q does not name the entry", r.Rule)
	}
}

func TestHostLoopbackIsPrivateByDefault(t *testing.T) {
	ln := echoServer(t)
	h := newHarness(t, policy.Rules{TCP: true, UDP: true}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := h.dialTCP(ctx, alias(port(ln)))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to the host's loopback without a rule: %v, want refused", err)
	}
}

func TestBlockRefusesAtOnce(t *testing.T) {
	ln := echoServer(t)
	p := port(ln)
	h := newHarness(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{":" + itoa(p)}, Block: []string{"tcp://:" + itoa(p)}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := h.dialTCP(ctx, alias(p))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("blocked dial: %v", err)
	}
	t.Logf("refused after %v", time.Since(start))
	recs := waitRecords(t, h.flowLog, 1)
	if recs[0].Route != "block" {
		t.Fatalf("record %+v", recs[0])
	}
}

func TestClosedPortIsRefused(t *testing.T) {
	ln := echoServer(t)
	p := port(ln)
	ln.Close() // now closed
	h := newHarness(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := h.dialTCP(ctx, alias(p))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to a closed port: %v, want refused", err)
	}
}

func TestSilentDestinationTimesOut(t *testing.T) {
	// A dial that never completes must leave the app waiting (its own
	// timeout), not refused.
	h := newHarness(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true}, func(c *Config) {
		c.DialLocal = func(ctx context.Context, _, _ string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := h.dialTCP(ctx, alias(9))
	if err == nil || strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to a silent destination: %v, want the app's own timeout", err)
	}
}

func TestRemoteWithoutAgentIsRefused(t *testing.T) {
	h := newHarness(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := h.dialTCP(ctx, netip.MustParseAddrPort("10.9.9.9:80"))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("remote dial without agent: %v", err)
	}
	recs := waitRecords(t, h.flowLog, 1)
	if recs[0].Route != "remote" || !strings.Contains(recs[0].Error, "no agent") {
		t.Fatalf("record %+v", recs[0])
	}
}

func TestDNSFromHostsAndFlowHostname(t *testing.T) {
	ln := echoServer(t)
	p := port(ln)
	h := newHarness(t, policy.Rules{TCP: true, UDP: true, DNSEnabled: true, HaveRemote: true, Local: []string{"app-db.test"}}, nil)
	m := h.query(t, "app-db.test.", dns.TypeA)
	if len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Fatalf("answer %v", m)
	}
	// Over TCP too.
	m = h.queryTCP(t, "app-db.test.", dns.TypeA)
	if len(m.Answer) != 1 {
		t.Fatalf("tcp answer %v", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The app dials the loopback address it got (through the NAT alias):
	// the hostname rule matches it through the DNS server's memory.
	c, err := h.dialTCP(ctx, alias(p))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	recs := waitRecords(t, h.flowLog, 1)
	if recs[0].Host != "app-db.test" || recs[0].Route != "local" {
		t.Fatalf("record %+v", recs[0])
	}
}

func TestUDPEchoAndBlockedUDP(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			pc.WriteToUDP(buf[:n], from)
		}
	}()
	up := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	h := newHarness(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true, Block: []string{"udp://:9"}}, nil)
	dst := alias(up)
	c, err := gonet.DialUDP(h.app, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(dst.Addr().As4()), Port: dst.Port()}, ipv4.ProtocolNumber)
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
	b := alias(9)
	bc, err := gonet.DialUDP(h.app, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(b.Addr().As4()), Port: 9}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	bc.Write([]byte("x"))
	bc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = bc.Read(make([]byte, 10))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("blocked UDP read: %v, want connection refused", err)
	}
}

func (h *harness) query(t *testing.T, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c, err := gonet.DialUDP(h.app, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(dnsAddr.As4()), Port: 53}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	co := &dns.Conn{Conn: c}
	co.SetDeadline(time.Now().Add(5 * time.Second))
	if err := co.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	m, err := co.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (h *harness) queryTCP(t *testing.T, name string, qtype uint16) *dns.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.dialTCP(ctx, netip.AddrPortFrom(dnsAddr, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	co := &dns.Conn{Conn: c}
	co.SetDeadline(time.Now().Add(5 * time.Second))
	if err := co.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	m, err := co.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitRecords(t *testing.T, l *syncBuffer, n int) []FlowRecord {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs := l.records(t)
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("flow log has %d records, want %d", len(recs), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
