package kernelpath

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

const (
	// Mark is the packet and conntrack mark of the kernel path's flows in
	// the sandbox.
	Mark = 0x7471
	// routeTable is the sandbox's routing table for marked packets.
	routeTable   = 0x7471
	rulePriority = 100
	// SandboxLink is the veth end inside the sandbox.
	SandboxLink = "tpk0"
	// HostLinkPrefix starts the host end's name: HostLinkPrefix + run id.
	HostLinkPrefix = "tpk"
	// tableName is the nftables table inside the sandbox.
	tableName = "trafficpolice_kernel"
	namedSet  = "named4"
	// lockFile serialises address picking between runs.
	lockFile = "/run/trafficpolice/kernelpath.lock"
)

// linkRange is where the veths' /30s come from: link-local, which neither a
// cluster nor a route the app needs uses (169.254.169.254, the metadata
// address of clouds, is outside it).
var linkRange = netip.MustParsePrefix("169.254.64.0/18")

// Config is what Setup needs.
type Config struct {
	// Namespace is the sandbox (a root run's named namespace).
	Namespace *netns.Namespace
	// ID is the run's id: it names the host's link and tags the host's rules.
	ID string
	// Steps is the policy for unnamed destinations (policy.Policy.Steps).
	Steps []policy.Step
}

// Path is a sandbox's kernel path, set up.
type Path struct {
	id, hostLink string
	ns           *netns.Namespace
	sandboxAddr  netip.Prefix // tpk0's address
	hostAddr     netip.Prefix
	routes       []hostRoute

	mu    sync.Mutex
	nft   *nftables.Conn // inside the sandbox
	table *nftables.Table
	set   *nftables.Set
	named map[netip.Addr]bool
}

// Setup builds the kernel path for cfg's sandbox. On error it removes what
// it made; the sandbox then works as before, through the router.
func Setup(cfg Config) (p *Path, err error) {
	if len(cfg.ID) == 0 || len(HostLinkPrefix+cfg.ID) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("kernel path: run id %q is invalid: want 1-%d characters", cfg.ID, unix.IFNAMSIZ-1-len(HostLinkPrefix))
	}
	p = &Path{id: cfg.ID, hostLink: HostLinkPrefix + cfg.ID, ns: cfg.Namespace, named: map[netip.Addr]bool{}}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("kernel path: %w", err), p.Close())
		}
	}()
	host, err := netlink.NewHandle()
	if err != nil {
		return p, fmt.Errorf("netlink: %w", err)
	}
	defer host.Close()
	if p.routes, err = hostRoutes(host, ""); err != nil {
		return p, err
	}
	if err := p.addLink(host); err != nil {
		return p, err
	}
	if err := p.configureHost(); err != nil {
		return p, err
	}
	if err := cfg.Namespace.Do(p.configureSandbox); err != nil {
		return p, err
	}
	if err := p.installRules(cfg.Steps); err != nil {
		return p, err
	}
	return p, nil
}

// addLink picks a free /30 and creates the veth pair with it, under a lock
// so that two runs never pick the same.
func (p *Path) addLink(h *netlink.Handle) error {
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(lockFile), err)
	}
	lf, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", lockFile, err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lockFile, err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)

	net30, err := pickNet(h)
	if err != nil {
		return err
	}
	p.hostAddr = netip.PrefixFrom(net30.Addr().Next(), 30)
	p.sandboxAddr = netip.PrefixFrom(p.hostAddr.Addr().Next(), 30)

	nsf, err := os.Open(p.ns.Path())
	if err != nil {
		return fmt.Errorf("open %s: %w", p.ns, err)
	}
	defer nsf.Close()
	la := netlink.NewLinkAttrs()
	la.Name = p.hostLink
	veth := &netlink.Veth{LinkAttrs: la, PeerName: SandboxLink, PeerNamespace: netlink.NsFd(int(nsf.Fd()))}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s (peer %s in %s): %w", p.hostLink, SandboxLink, p.ns, err)
	}
	l, err := h.LinkByName(p.hostLink)
	if err != nil {
		return fmt.Errorf("find %s: %w", p.hostLink, err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p.hostAddr)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", p.hostAddr, p.hostLink, err)
	}
	// Forwarding for this link only: it lets the sandbox's packets through;
	// replies need it on the link they come in by (see hostRoutes).
	if err := writeSysctl(filepath.Join("net/ipv4/conf", p.hostLink, "forwarding"), "1"); err != nil {
		return err
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", p.hostLink, err)
	}
	return nil
}

// pickNet returns a random /30 of linkRange that no host address or
// specific route uses.
func pickNet(h *netlink.Handle) (netip.Prefix, error) {
	addrs, err := h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list the host's addresses: %w", err)
	}
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list the host's routes: %w", err)
	}
	n := 1 << (30 - linkRange.Bits())
	for try := 0; try < 64; try++ {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return netip.Prefix{}, fmt.Errorf("random address: %w", err)
		}
		i := binary.BigEndian.Uint32(b[:]) % uint32(n)
		base := binary.BigEndian.Uint32(linkRange.Addr().AsSlice()) + i*4
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base)
		cand := netip.PrefixFrom(netip.AddrFrom4(a), 30)
		if free(cand, addrs, routes) {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /30 in %s after 64 tries", linkRange)
}

func free(cand netip.Prefix, addrs []netlink.Addr, routes []netlink.Route) bool {
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && cand.Contains(ip.Unmap()) {
			return false
		}
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		// A wider route (a host's 169.254.0.0/16) is shadowed by the /30.
		if ok && ones >= 30 && netip.PrefixFrom(ip.Unmap(), ones).Overlaps(cand) {
			return false
		}
	}
	return true
}

// configureSandbox runs inside the sandbox: the veth's address, the
// routing table of marked packets and its rule.
func (p *Path) configureSandbox() error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(SandboxLink)
	if err != nil {
		return fmt.Errorf("find %s in the sandbox: %w", SandboxLink, err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p.sandboxAddr)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", p.sandboxAddr, SandboxLink, err)
	}
	// Replies come in on the veth from addresses the main table routes to
	// the TUN: strict reverse-path filtering would drop them.
	for _, key := range []string{"net/ipv4/conf/all/rp_filter", filepath.Join("net/ipv4/conf", SandboxLink, "rp_filter")} {
		if err := writeSysctl(key, "0"); err != nil {
			return err
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", SandboxLink, err)
	}
	gw := p.hostAddr.Addr().AsSlice()
	for _, r := range p.routes {
		rt := &netlink.Route{Table: routeTable, Dst: ipNet(r.prefix)}
		if r.forward {
			rt.LinkIndex, rt.Gw = l.Attrs().Index, net.IP(gw)
		} else {
			// Not forwarded by the host: on to the next rule (the
			// router), as if this table had no route.
			rt.Type = unix.RTN_THROW
		}
		if err := h.RouteAdd(rt); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("route %s in table %d: %w", r.prefix, routeTable, err)
		}
	}
	// Other runs' veths are not a destination of this one.
	throw := &netlink.Route{Table: routeTable, Dst: ipNet(linkRange), Type: unix.RTN_THROW}
	if err := h.RouteAdd(throw); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("route %s in table %d: %w", linkRange, routeTable, err)
	}
	rule := netlink.NewRule()
	rule.Family = unix.AF_INET
	rule.Mark = Mark
	mask := uint32(0xffffffff)
	rule.Mask = &mask
	rule.Table = routeTable
	rule.Priority = rulePriority
	if err := h.RuleAdd(rule); err != nil {
		return fmt.Errorf("rule fwmark %#x lookup %d: %w", Mark, routeTable, err)
	}
	return nil
}

// Forwards says whether the host takes a flow to a on the kernel path: a
// flow the rules mark for it that the host would not forward goes to the
// router instead.
func (p *Path) Forwards(a netip.Addr) bool {
	r, ok := lookup(p.routes, a.Unmap())
	return ok && r.forward
}

// SandboxAddr is the sandbox's address on the veth.
func (p *Path) SandboxAddr() netip.Addr { return p.sandboxAddr.Addr() }

// Close removes what Setup made outside the sandbox (what is inside goes
// with the namespace). It may be called on a half-built Path.
func (p *Path) Close() error {
	p.mu.Lock()
	if p.nft != nil {
		p.nft.CloseLasting()
		p.nft = nil
	}
	p.mu.Unlock()
	return RemoveLeftovers(p.id)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// writeSysctl writes /proc/sys/KEY of the calling thread's namespace.
func writeSysctl(key, val string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
	}
	return nil
}
