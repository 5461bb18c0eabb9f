package router

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/trafficpolice/trafficpolice/router/dnscache"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

// DialFunc opens a connection, like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config is everything the router needs; the sandbox fills it in.
type Config struct {
	// Link is the packet device: the TUN (see NewTUNEndpoint) or, in tests,
	// an in-memory endpoint.
	Link stack.LinkEndpoint
	// Policy decides each flow's route.
	Policy *policy.Policy
	// Remote is the agent's tunnel; nil when no agent is configured, in
	// which case remote flows are refused.
	Remote Remote
	// SearchDomains are the pod's resolv.conf search domains: a name the
	// cluster resolves that a rule sends local is tried on the host as the
	// app asked it, without them.
	SearchDomains []string
	// DialLocal dials from the host; nil means a net.Dialer without
	// keepalive, which the router sets on a TCP flow's host socket once
	// the flow has lasted (splice.KeepAliveLater).
	DialLocal DialFunc
	// DialSandbox dials inside the sandbox (the app's own loopback ports);
	// nil refuses such flows.
	DialSandbox DialFunc
	// AppListens reports whether the app listens on a port in the sandbox.
	AppListens func(proto policy.Proto, port uint16) bool
	// LoopbackAlias maps the address the sandbox's NAT gave to a loopback
	// destination back to the loopback address the app used.
	LoopbackAlias func(netip.Addr) (netip.Addr, bool)
	// DNSAddrs are the addresses the sandbox's resolv.conf points at.
	DNSAddrs []netip.Addr
	// LocalResolver resolves names on the host side; nil uses the host's
	// /etc/resolv.conf and /etc/hosts.
	LocalResolver Exchanger
	// HostSearchDomains are the host's resolv.conf search domains: a rule's
	// name resolved on the host is asked in those forms too, as the host's
	// own resolver would.
	HostSearchDomains []string
	// FlowLog receives one JSON line per finished flow; nil disables it.
	FlowLog io.Writer
	// Named, if set, is told whenever the names an address stands for
	// change (the sandbox's DNS answered with it, or a rule's name resolved
	// to it), before the answer reaches the app: local says every TCP and
	// UDP flow to it now goes local whatever its port, until the first of
	// its names expires. The kernel fast path takes such an address and
	// leaves every other named one to the router, which alone knows names.
	// An error is logged; the answer still goes out.
	Named func(addr netip.Addr, local bool, until time.Time) error
	// NoDNSCache asks the cluster for every name the app looks up, even
	// one answered a moment ago: by default the cluster's answers are
	// kept for their TTL (see dnscache).
	NoDNSCache bool
	// KernelSockets, if set, takes the app's TCP connections as kernel
	// sockets (their SYNs held in a queue while the router dials); nil
	// leaves every connection to the netstack.
	KernelSockets *KernelSockets
	// Logger receives the router's own messages.
	Logger *slog.Logger
}

// Exchanger answers one DNS query.
type Exchanger interface {
	Exchange(ctx context.Context, query []byte) ([]byte, error)
}

// Router forwards the sandbox's flows. Start it with Start, stop it with Close.
type Router struct {
	cfg    Config
	stack  *stack.Stack
	names  *nameTable
	log    *slog.Logger
	flows  *flowLog
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// tcpMu guards adding flows to wg (track): packets keep arriving
	// while Close waits for the flows (gVisor's TCP forwarder runs each
	// handler on a goroutine of its own, UDP and echo start theirs from
	// the packet loop), and a WaitGroup may not grow during its Wait;
	// closing turns those away.
	tcpMu   sync.Mutex
	closing bool

	warnOnce sync.Map // destinations already warned about
	pending  pendingDials
	taken    takenFlows // KernelSockets' flows waiting for the app's connection
	// kernelFDs counts the app's kernel sockets the router holds or waits
	// for; fileLimit is its open-file limit (nearFileLimit).
	kernelFDs atomic.Int64
	fileLimit int64
	pinger    *pinger
	dnsCache  *dnscache.Cache // nil with NoDNSCache
	stats     Stats
	closers   []io.Closer
	onClose   []func()
	closed    sync.Once
}

// OnClose registers fn to run after the netstack has stopped (e.g. to
// close the TUN descriptor it read from).
func (r *Router) OnClose(fn func()) { r.onClose = append(r.onClose, fn) }

const nicID tcpip.NICID = 1

// New builds the router's netstack on cfg.Link. Nothing is read from the
// link before Start.
func New(cfg Config) (*Router, error) {
	if cfg.Link == nil || cfg.Policy == nil {
		return nil, fmt.Errorf("router: Link and Policy are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialLocal == nil {
		d := net.Dialer{KeepAlive: -1}
		cfg.DialLocal = d.DialContext
	}
	if cfg.LocalResolver == nil {
		cfg.LocalResolver = NewHostResolver("/etc/resolv.conf", "/etc/hosts")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Router{
		cfg:    cfg,
		names:  newNameTable(),
		log:    cfg.Logger,
		ctx:    ctx,
		cancel: cancel,
	}
	if cfg.Named != nil {
		r.names.onChange = func(a netip.Addr, names []string, until time.Time) {
			d, uniform := cfg.Policy.UniformRoute(a, names)
			local := uniform && d.Route == policy.Local
			if err := cfg.Named(a, local, until); err != nil {
				r.log.Error("the kernel path may take flows to a named address", "addr", a, "err", err)
			}
		}
	}
	r.pinger = &pinger{ctx: ctx, wg: &r.wg}
	if !cfg.NoDNSCache {
		r.dnsCache = dnscache.New(nil)
	}
	s, err := newStack(cfg.Link)
	if err != nil {
		cancel()
		return nil, err
	}
	r.stack = s
	r.flows = newFlowLog(cfg.FlowLog)
	return r, nil
}

func newStack(link stack.LinkEndpoint) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	if err := s.CreateNIC(nicID, link); err != nil {
		return nil, fmt.Errorf("router: create NIC: %s", err)
	}
	// Promiscuous + spoofing: accept packets for any destination and answer
	// from it, so the app's peer address is the one it dialed.
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return nil, fmt.Errorf("router: promiscuous mode: %s", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		return nil, fmt.Errorf("router: spoofing: %s", err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate)
	// Buffers sized for a fast local link: the default 1 MiB maximum caps a
	// single flow well below what the TUN can carry.
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	// The router's side of a flow that the destination closed first ends
	// in TIME_WAIT. gVisor's forwarder never sees a SYN for a tuple in
	// TIME_WAIT (the netstack only hands those to a listening endpoint),
	// so an app that reuses the port — Linux does, quickly, under load —
	// would wait out the whole TIME_WAIT. On a TUN inside this host no
	// segment lingers in a network, which is what TIME_WAIT guards against.
	tw := tcpip.TCPTimeWaitTimeoutOption(timeWait)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &tw)
	return s, nil
}

// Start installs the forwarders and the DNS server, and resolves the rules'
// host names (waiting at most ruleResolveTimeout for their first answers).
func (r *Router) Start() error {
	for _, a := range r.cfg.DNSAddrs {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := r.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("router: add DNS address %s: %s", a, err)
		}
	}
	tcpFwd := tcp.NewForwarder(r.stack, 0, maxPendingDials, r.handleTCP)
	r.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(r.stack, r.handleUDP)
	r.stack.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	r.stack.SetTransportProtocolHandler(icmp.ProtocolNumber4, r.handleEcho4)
	r.stack.SetTransportProtocolHandler(icmp.ProtocolNumber6, r.handleEcho6)
	for _, a := range r.cfg.DNSAddrs {
		if err := r.serveDNS(a); err != nil {
			r.Close()
			return err
		}
	}
	r.startRuleNames()
	if r.cfg.KernelSockets != nil {
		r.startKernelSockets()
	}
	return nil
}

// track counts a new flow in wg, unless the router is closing (false:
// the caller drops the flow). The caller calls wg.Done when it ends.
func (r *Router) track() bool {
	r.tcpMu.Lock()
	defer r.tcpMu.Unlock()
	if r.closing {
		return false
	}
	r.wg.Add(1)
	return true
}

// Close stops every flow and the netstack. It is safe to call twice.
// closeFlowsTimeout bounds how long Close waits for flows to end.
const closeFlowsTimeout = 5 * time.Second

func (r *Router) Close() error {
	r.closed.Do(func() {
		r.tcpMu.Lock()
		r.closing = true
		r.tcpMu.Unlock()
		r.cancel()
		for _, c := range r.closers {
			c.Close()
		}
		r.stack.Close()
		// Every flow has ended, and written its record, before the log
		// closes; bounded, so that no flow can hold the teardown for ever.
		waited := make(chan struct{})
		go func() { r.wg.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(closeFlowsTimeout):
			r.log.Warn("flows still open after the router closed; their records are lost", "waited", closeFlowsTimeout)
		}
		// Stop the link's reader before the stack's Wait: Wait removes the
		// NIC under the stack's lock and then waits for the reader, which
		// may be delivering a packet that needs that lock (a deadlock seen
		// in CI: a run that never ended after its app had).
		r.cfg.Link.Close()
		r.cfg.Link.Wait()
		r.stack.Wait()
		r.flows.close()
		for _, fn := range r.onClose {
			fn()
		}
	})
	return nil
}

// Stats returns counters about the router's flows.
func (r *Router) Stats() StatsSnapshot {
	st := r.stats.snapshot()
	st.SYNsDropped += int64(r.stack.Stats().TCP.ForwardMaxInFlightDrop.Value())
	return st
}

func (r *Router) warnOnceFor(key string, msg string, args ...any) {
	if _, loaded := r.warnOnce.LoadOrStore(key, true); !loaded {
		r.log.Warn(msg, args...)
	}
}

func addrFrom(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}

// appDst turns the destination the netstack saw into the one the app
// dialed (loopback aliases mapped back).
func (r *Router) appDst(a tcpip.Address, port uint16) netip.AddrPort {
	return r.appDstAddr(netip.AddrPortFrom(addrFrom(a), port))
}

// appDstAddr is appDst for a destination the kernel reported (a queued
// SYN's).
func (r *Router) appDstAddr(d netip.AddrPort) netip.AddrPort {
	if r.cfg.LoopbackAlias != nil {
		if lo, ok := r.cfg.LoopbackAlias(d.Addr()); ok {
			return netip.AddrPortFrom(lo, d.Port())
		}
	}
	return d
}

// FlowLogErr reports, once Close has returned, why records are missing
// from the flow log; nil when every record was written. An audit log that
// silently loses lines is worse than none: the run reports it.
func (r *Router) FlowLogErr() error { return r.flows.err() }
