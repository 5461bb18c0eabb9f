// Package routertest runs a real router.Router for tests, without root: its
// link is one end of an in-memory pipe, and a second gVisor netstack at the
// other end plays the sandbox's kernel, with the sandbox's addresses
// (package netns's plan). Tests dial TCP and UDP and send DNS queries "from
// the app" and read the flow log. Remote stands in for the agent's tunnel.
//
// It is the router's twin of wireguard-go's tuntest: everything above the
// link is the product code; only the TUN device, the namespace and the
// sandbox's NAT are replaced. It is for tests only.
package routertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/buffer"
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
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

// MTU is the in-memory link's MTU, the sandbox TUN's default.
const MTU = netns.DefaultMTU

// WaitTimeout bounds every wait for a condition in this package (a flow
// record to appear). It is far above what any condition needs, so that a
// slow machine does not fail a test, while a broken one still ends.
const WaitTimeout = 10 * time.Second

// The app's addresses, as in a real sandbox.
var (
	AppAddr4 = netns.SandboxAddr4.Addr()
	AppAddr6 = netns.SandboxAddr6.Addr()
)

const appNIC tcpip.NICID = 1

// App is the app's side of a running router: a netstack joined to the
// router by an in-memory link. It belongs to the test that started it.
type App struct {
	// Router is the router under test, started; it is closed when the
	// test ends.
	Router *router.Router

	t     testing.TB
	stack *stack.Stack
	link  *pipe.Endpoint // the app's end of the link
	log   *flowLog
}

// Start builds and starts a router with cfg and joins an app netstack to
// it; both stop when the test ends. cfg is as for router.New, except:
//   - Link must be nil: Start supplies the in-memory link.
//   - DNSAddrs nil means the sandbox's netns.DNSAddr4 and netns.DNSAddr6.
//   - LoopbackAlias nil means netns.AliasToLoopback, the sandbox's NAT.
//   - LocalResolver nil means LocalResolver(t, "127.0.0.1 localhost"): no
//     query leaves the process.
//   - FlowLog, when set, receives the log too; the App keeps its own copy
//     for Flows and WaitFlows.
func Start(t testing.TB, cfg router.Config) *App {
	t.Helper()
	if cfg.Link != nil {
		t.Fatal("routertest.Start: cfg.Link is set: leave it nil, Start supplies the in-memory link")
	}
	if cfg.Policy == nil {
		t.Fatal("routertest.Start: cfg.Policy is nil: build one with routertest.Policy")
	}
	if cfg.DNSAddrs == nil {
		cfg.DNSAddrs = []netip.Addr{netns.DNSAddr4, netns.DNSAddr6}
	}
	if cfg.LoopbackAlias == nil {
		cfg.LoopbackAlias = netns.AliasToLoopback
	}
	if cfg.LocalResolver == nil {
		cfg.LocalResolver = LocalResolver(t, "127.0.0.1 localhost\n")
	}
	log := &flowLog{}
	if cfg.FlowLog != nil {
		cfg.FlowLog = io.MultiWriter(log, cfg.FlowLog)
	} else {
		cfg.FlowLog = log
	}
	appEnd, routerEnd := pipe.New("", "", MTU)
	loop := newOneLoop(routerEnd)
	cfg.Link = loop

	s, err := appStack(appEnd)
	if err != nil {
		t.Fatalf("routertest: %v", err)
	}
	r, err := router.New(cfg)
	if err != nil {
		s.Close()
		t.Fatalf("routertest: %v", err)
	}
	if err := r.Start(); err != nil {
		r.Close()
		s.Close()
		t.Fatalf("routertest: %v", err)
	}
	t.Cleanup(func() {
		r.Close()
		loop.Close()
		s.Close()
		s.Wait()
	})
	return &App{Router: r, t: t, stack: s, link: appEnd, log: log}
}

// appStack is the sandbox's kernel: the sandbox's addresses on one NIC,
// every route through it.
func appStack(link stack.LinkEndpoint) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	if err := s.CreateNIC(appNIC, link); err != nil {
		s.Close()
		return nil, fmt.Errorf("app netstack: create NIC: %s", err)
	}
	for _, p := range []netip.Prefix{netns.SandboxAddr4, netns.SandboxAddr6} {
		pa := tcpip.ProtocolAddress{Protocol: protocolOf(p.Addr()), AddressWithPrefix: tcpipAddr(p.Addr()).WithPrefix()}
		if err := s.AddProtocolAddress(appNIC, pa, stack.AddressProperties{}); err != nil {
			s.Close()
			return nil, fmt.Errorf("app netstack: add %s: %s", p, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: appNIC},
		{Destination: header.IPv6EmptySubnet, NIC: appNIC},
	})
	return s, nil
}

// Policy builds the policy for rules, failing the test when they do not
// parse.
func Policy(t testing.TB, rules policy.Rules) *policy.Policy {
	t.Helper()
	p, err := policy.New(rules)
	if err != nil {
		t.Fatalf("routertest: policy: %v", err)
	}
	return p
}

// LocalResolver is the host side's resolver for a test: hosts is the
// content of its hosts file, and its resolv.conf lists no nameserver, so
// a name the hosts file does not know fails instead of leaving the process.
func LocalResolver(t testing.TB, hosts string) router.Exchanger {
	t.Helper()
	dir := t.TempDir()
	hostsPath, resolvPath := filepath.Join(dir, "hosts"), filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(hostsPath, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(resolvPath, []byte("# no nameserver: only the hosts file answers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return router.NewHostResolver(resolvPath, hostsPath)
}

// appDst is where the app's packets for dst go: a loopback destination is
// rewritten to its alias, as the sandbox's NAT does.
func appDst(dst netip.AddrPort) tcpip.FullAddress {
	a := netns.LoopbackToAlias(dst.Addr())
	return tcpip.FullAddress{NIC: appNIC, Addr: tcpipAddr(a), Port: dst.Port()}
}

// DialTCP connects from the app to dst, through the router. A loopback
// dst goes through the sandbox's loopback alias, as the app's 127.0.0.1
// does. The conn supports CloseWrite.
func (a *App) DialTCP(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, error) {
	return gonet.DialContextTCP(ctx, a.stack, appDst(dst), protocolOf(dst.Addr()))
}

// DialUDP opens a connected UDP socket from the app to dst, through the
// router; a loopback dst is aliased as for DialTCP.
func (a *App) DialUDP(dst netip.AddrPort) (*gonet.UDPConn, error) {
	to := appDst(dst)
	return gonet.DialUDP(a.stack, nil, &to, protocolOf(dst.Addr()))
}

// Query asks the router's DNS server (at the sandbox's IPv4 DNS address)
// for name and qtype over network ("udp" or "tcp"), as the app's resolver
// does, and returns the answer.
func (a *App) Query(ctx context.Context, network, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	return a.Exchange(ctx, network, q)
}

// Exchange sends q to the router's DNS server over network ("udp" or
// "tcp") and returns the answer.
func (a *App) Exchange(ctx context.Context, network string, q *dns.Msg) (*dns.Msg, error) {
	server := netip.AddrPortFrom(netns.DNSAddr4, 53)
	var c net.Conn
	var err error
	switch network {
	case "udp":
		c, err = a.DialUDP(server)
	case "tcp":
		c, err = a.DialTCP(ctx, server)
	default:
		return nil, fmt.Errorf("routertest: DNS over %q: use udp or tcp", network)
	}
	if err != nil {
		return nil, fmt.Errorf("routertest: DNS over %s to %s: %w", network, server, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(q); err != nil {
		return nil, fmt.Errorf("routertest: DNS query over %s: %w", network, err)
	}
	m, err := co.ReadMsg()
	if err != nil {
		return nil, fmt.Errorf("routertest: DNS answer over %s: %w", network, err)
	}
	return m, nil
}

// Flows returns the flow log so far, one record per finished flow.
func (a *App) Flows() []router.FlowRecord {
	a.t.Helper()
	recs, err := a.log.records()
	if err != nil {
		a.t.Fatalf("routertest: %v", err)
	}
	return recs
}

// WaitFlows waits until the flow log holds at least n records and returns
// them; the test fails if that takes longer than WaitTimeout.
func (a *App) WaitFlows(n int) []router.FlowRecord {
	a.t.Helper()
	var recs []router.FlowRecord
	if !Eventually(func() bool { recs = a.Flows(); return len(recs) >= n }) {
		a.t.Fatalf("routertest: the flow log has %d records after %s, want %d: %+v", len(recs), WaitTimeout, n, recs)
	}
	return recs
}

// Eventually polls cond until it holds (true) or WaitTimeout passes (false).
func Eventually(cond func() bool) bool {
	deadline := time.Now().Add(WaitTimeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// flowLog keeps the router's JSON lines.
type flowLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *flowLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *flowLog) records() ([]router.FlowRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []router.FlowRecord
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var r router.FlowRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("flow log line %q: %w", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out, nil
}

func protocolOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Unmap().Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func tcpipAddr(a netip.Addr) tcpip.Address {
	if a.Unmap().Is4() {
		return tcpip.AddrFrom4(a.Unmap().As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// Inject puts a raw IP packet (IPv4 or IPv6 by its first byte) on the link
// as the app's kernel would never send it: what an app with CAP_NET_RAW
// can write on its TUN.
func (a *App) Inject(packet []byte) error {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(packet)})
	defer pkt.DecRef()
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	if len(packet) > 0 && packet[0]>>4 == 6 {
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	}
	var pkts stack.PacketBufferList
	pkts.PushBack(pkt)
	_, err := a.link.WritePackets(pkts)
	if err != nil {
		return fmt.Errorf("inject a packet: %s", err)
	}
	return nil
}

// Ping sends one ICMPv4 echo request from the app to dst (a loopback dst
// aliased as for DialTCP), with sequence seq and data, and returns the
// ICMP message of the answer: the echo reply, or an error message.
func (a *App) Ping(ctx context.Context, dst netip.Addr, seq uint16, data []byte) (header.ICMPv4, error) {
	var wq waiter.Queue
	ep, terr := a.stack.NewEndpoint(icmp.ProtocolNumber4, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, fmt.Errorf("routertest: ICMP endpoint: %s", terr)
	}
	defer ep.Close()
	to := appDst(netip.AddrPortFrom(dst, 0))
	if terr := ep.Connect(to); terr != nil {
		return nil, fmt.Errorf("routertest: ICMP connect to %s: %s", dst, terr)
	}
	req := header.ICMPv4(make([]byte, header.ICMPv4MinimumSize+len(data)))
	req.SetType(header.ICMPv4Echo)
	req.SetSequence(seq)
	copy(req.Payload(), data)
	var r bytes.Reader
	r.Reset(req)
	if _, terr := ep.Write(&r, tcpip.WriteOptions{}); terr != nil {
		return nil, fmt.Errorf("routertest: ICMP echo to %s: %s", dst, terr)
	}
	e, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&e)
	defer wq.EventUnregister(&e)
	for {
		var b bytes.Buffer
		_, terr := ep.Read(&b, tcpip.ReadOptions{})
		if terr == nil {
			return header.ICMPv4(b.Bytes()), nil
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return nil, fmt.Errorf("routertest: ICMP read: %s", terr)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("routertest: no answer to the ping of %s (seq %d): %w", dst, seq, ctx.Err())
		}
	}
}
