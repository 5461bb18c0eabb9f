package kernelpath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

// neverKernel are destinations the kernel path never takes: loopback, the
// sandbox's own ranges (the router's DNS, the loopback alias), this
// network, multicast and broadcast, and other runs' veths.
var neverKernel = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/3"),
	linkRange,
}

// addRoutes fills the kernel path's table inside the sandbox: each host
// route the host forwards, through the veth with the veth's address as the
// source (no NAT in the sandbox); every other range, and neverKernel, as a
// "throw", which sends the lookup on to the next rule and in the end to the
// main table's default route, the router's TUN.
func (p *Path) addRoutes(h *netlink.Handle, link netlink.Link) error {
	add := func(rt *netlink.Route, what netip.Prefix) error {
		if err := h.RouteAdd(rt); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("route %s in table %d: %w", what, routeTable, err)
		}
		return nil
	}
	gw, src := net.IP(p.hostAddr.Addr().AsSlice()), net.IP(p.sandboxAddr.Addr().AsSlice())
	for _, r := range p.routes {
		if linkRange.Overlaps(r.prefix) && r.prefix.Bits() >= linkRange.Bits() {
			continue // another run's veth (its throw is below)
		}
		rt := &netlink.Route{Table: routeTable, Dst: netns.IPNet(r.prefix)}
		if r.forward {
			rt.LinkIndex, rt.Gw, rt.Src = link.Attrs().Index, gw, src
		} else {
			rt.Type = unix.RTN_THROW
		}
		if err := add(rt, r.prefix); err != nil {
			return err
		}
	}
	for _, n := range neverKernel {
		if err := add(&netlink.Route{Table: routeTable, Dst: netns.IPNet(n), Type: unix.RTN_THROW}, n); err != nil {
			return err
		}
	}
	return nil
}

// addRules turns the policy's steps into routing rules: the kernel picks
// a connection's route, and its source address, when it starts (connect,
// or each datagram), from its destination address, protocol and port —
// what a step matches. A local step looks up the kernel path's table, any
// other the main table (the router). ICMP and other protocols never match
// a rule, so they keep the main table's route.
func (p *Path) addRules(h *netlink.Handle, steps []policy.Step) error {
	// A connection's route is looked up again whenever the sandbox's
	// routes change (Named adds some), with its source address by then
	// chosen: the source keeps it on the path it started on.
	for _, r := range []struct {
		prio  int
		src   netip.Addr
		table int
	}{
		{rulePriority - 3, netns.SandboxAddr4.Addr(), unix.RT_TABLE_MAIN},
		{rulePriority - 2, p.sandboxAddr.Addr(), routeTable},
	} {
		rule := netlink.NewRule()
		rule.Family, rule.Priority, rule.Table = unix.AF_INET, r.prio, r.table
		rule.Src = netns.IPNet(netip.PrefixFrom(r.src, 32))
		if err := h.RuleAdd(rule); err != nil {
			return fmt.Errorf("routing rule %d from %s: %w", r.prio, r.src, err)
		}
	}
	named := netlink.NewRule()
	named.Family, named.Priority, named.Table = unix.AF_INET, rulePriority-1, namedTable
	if err := h.RuleAdd(named); err != nil {
		return fmt.Errorf("routing rule %d lookup %d: %w", rulePriority-1, namedTable, err)
	}
	prio := rulePriority
	var rules []protoRule
	for _, s := range steps {
		if s.Prefix.IsValid() && !s.Prefix.Addr().Is4() {
			continue // an IPv6 range: no IPv4 flow matches it
		}
		protos := []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP}
		switch s.Proto {
		case policy.TCP:
			protos = protos[:1]
		case policy.UDP:
			protos = protos[1:]
		}
		for _, proto := range protos {
			r := protoRule{priority: prio, table: unix.RT_TABLE_MAIN, proto: proto, port: s.Port, rule: s.Rule}
			if s.Local {
				r.table = routeTable
			}
			if s.Prefix.IsValid() {
				r.dst = s.Prefix
			}
			rules = append(rules, r)
			prio++
		}
	}
	return addProtoRules(p.ns, rules)
}

// namedState is what the kernel path does with a named address.
type namedState struct {
	gen    uint64      // which Named call decided last
	expiry *time.Timer // armed while a takes the kernel path
	// routed and kernel: a's route in the named table, as last set.
	routed, kernel bool
}

// Named tells the kernel path that the names a stands for changed: local
// says every TCP and UDP flow to a goes local (by a rule that names one of
// them) until the first of those names expires. New flows to a then take
// the kernel path if local and the host forwards to a, the router
// otherwise (it knows a's names); at until a goes back to the router,
// which then decides by whatever names a still has. It returns once the
// kernel knows, so call it before the DNS answer reaches the app.
// Connections already open keep their path. IPv6 addresses never take the
// kernel path.
func (p *Path) Named(a netip.Addr, local bool, until time.Time) error {
	a = a.Unmap()
	if !a.Is4() {
		return nil
	}
	kernel := local && p.Forwards(a) && time.Now().Before(until)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inside == nil {
		return nil
	}
	st := p.named[a]
	if st == nil {
		st = &namedState{}
		p.named[a] = st
	}
	if st.expiry != nil {
		st.expiry.Stop()
		st.expiry = nil
	}
	st.gen++
	if err := p.setNamedRoute(st, a, kernel); err != nil {
		return err
	}
	if kernel {
		gen := st.gen
		st.expiry = time.AfterFunc(time.Until(until), func() { p.expire(a, gen) })
	}
	return nil
}

// expire hands a back to the router once the names that sent it local
// expire, unless a later Named call has decided anew.
func (p *Path) expire(a netip.Addr, gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.named[a]
	// A later Named call stopped this timer or will: only the call that
	// armed it (to the kernel path) may undo it.
	if p.inside == nil || st == nil || st.gen != gen {
		return
	}
	st.expiry = nil
	if err := p.setNamedRoute(st, a, false); err != nil {
		// The router's decision would differ only if the names expired
		// changed it; retry soon rather than leave it.
		st.expiry = time.AfterFunc(time.Second, func() { p.expire(a, gen) })
	}
}

// setNamedRoute sets a's route as routeNamed does, unless it is already
// so: every DNS answer that adds a name to an address calls Named, and the
// kernel's route need not hear of it when the path stays the same. Called
// with p.mu held.
func (p *Path) setNamedRoute(st *namedState, a netip.Addr, kernel bool) error {
	if st.routed && st.kernel == kernel {
		return nil
	}
	st.routed = false // unknown until the kernel says
	if err := p.routeNamed(a, kernel); err != nil {
		return err
	}
	st.routed, st.kernel = true, kernel
	p.routeWrites++
	return nil
}

// routeNamed sets a's route in the named table: the veth (kernel) or the
// TUN (router). Called with p.mu held.
func (p *Path) routeNamed(a netip.Addr, kernel bool) error {
	rt := &netlink.Route{Table: namedTable, Dst: netns.IPNet(netip.PrefixFrom(a, 32))}
	if kernel {
		rt.LinkIndex = p.vethIndex
		rt.Gw = net.IP(p.hostAddr.Addr().AsSlice())
		rt.Src = net.IP(p.sandboxAddr.Addr().AsSlice())
	} else {
		rt.LinkIndex = p.tunIndex
		rt.Src = net.IP(netns.SandboxAddr4.Addr().AsSlice())
		rt.Scope = netlink.SCOPE_LINK
	}
	if err := p.inside.RouteReplace(rt); err != nil {
		where := "the router"
		if kernel {
			where = "the kernel path"
		}
		return fmt.Errorf("kernel path: send new flows to %s to %s: %w", a, where, err)
	}
	return nil
}
