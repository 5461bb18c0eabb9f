package kernelpath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

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
		rt := &netlink.Route{Table: routeTable, Dst: ipNet(r.prefix)}
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
		if err := add(&netlink.Route{Table: routeTable, Dst: ipNet(n), Type: unix.RTN_THROW}, n); err != nil {
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
		rule.Src = ipNet(netip.PrefixFrom(r.src, 32))
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
	for _, s := range steps {
		if s.Prefix.IsValid() && !s.Prefix.Addr().Is4() {
			continue // an IPv6 range: no IPv4 flow matches it
		}
		protos := []int{unix.IPPROTO_TCP, unix.IPPROTO_UDP}
		switch s.Proto {
		case policy.TCP:
			protos = protos[:1]
		case policy.UDP:
			protos = protos[1:]
		}
		for _, proto := range protos {
			r := netlink.NewRule()
			r.Family = unix.AF_INET
			r.Priority = prio
			r.IPProto = proto
			r.Table = unix.RT_TABLE_MAIN
			if s.Local {
				r.Table = routeTable
			}
			if s.Prefix.IsValid() && s.Prefix.Bits() > 0 {
				r.Dst = ipNet(s.Prefix.Masked())
			}
			if s.Port != 0 {
				r.Dport = netlink.NewRulePortRange(s.Port, s.Port)
			}
			if err := h.RuleAdd(r); err != nil {
				return fmt.Errorf("routing rule %d for %q (kernels before 4.17 have no ipproto and dport in rules): %w", prio, s.Rule, err)
			}
			prio++
		}
	}
	return nil
}

// Named tells the kernel path that the sandbox's DNS has answered with a:
// from now on new flows to a go to the router, which knows a's names and
// so decides by rules that name hosts. It returns once the kernel knows,
// so call it before the answer reaches the app. IPv6 addresses never take
// the kernel path.
func (p *Path) Named(a netip.Addr) error {
	a = a.Unmap()
	if !a.Is4() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.named[a] || p.inside == nil {
		return nil
	}
	// New connections to a take the TUN; those already on the kernel path
	// stay there (their source address says so).
	rt := &netlink.Route{Table: namedTable, Dst: ipNet(netip.PrefixFrom(a, 32)), LinkIndex: p.tunIndex,
		Src: net.IP(netns.SandboxAddr4.Addr().AsSlice()), Scope: netlink.SCOPE_LINK}
	if err := p.inside.RouteAdd(rt); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("kernel path: leave %s to the router: %w", a, err)
	}
	p.named[a] = true
	return nil
}
