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
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

const (
	// routeTable is the sandbox's routing table of the kernel path.
	routeTable = 0x7471
	// namedTable routes the addresses that have names to the TUN.
	namedTable = 0x7472
	// rulePriority is the first step's rule; three rules come before.
	rulePriority = 100
	// SandboxLink is the veth end inside the sandbox.
	SandboxLink = "tpk0"
	// HostLinkPrefix starts the host end's name: HostLinkPrefix + run id.
	HostLinkPrefix = "tpk"
	// pickLock is the abstract socket that serialises address picking
	// between runs: it goes with the process, leaving nothing behind.
	pickLock = "@trafficpolice-kernelpath"
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
	// Track keeps the kernel path's flows in the sandbox's conntrack, with
	// byte counters and timestamps, for WatchFlows (a flow log).
	Track bool
}

// Path is a sandbox's kernel path, set up.
type Path struct {
	id, hostLink string
	ns           *netns.Namespace
	track        bool
	sandboxAddr  netip.Prefix // tpk0's address
	hostAddr     netip.Prefix
	routes       []hostRoute

	mu        sync.Mutex
	inside    *netlink.Handle // netlink inside the sandbox
	tunIndex  int             // the router's TUN link in the sandbox
	vethIndex int             // SandboxLink
	// hostRulesAdded: configureHost succeeded, so Close can delete its
	// rules by what they are.
	hostRulesAdded bool
	named          map[netip.Addr]*namedState
	routeWrites    int // named routes written to the kernel (for tests)
}

// Setup builds the kernel path for cfg's sandbox. On error it removes what
// it made; the sandbox then works as before, through the router.
func Setup(cfg Config) (p *Path, err error) {
	if len(cfg.ID) == 0 || len(HostLinkPrefix+cfg.ID) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("kernel path: run id %q is invalid: want 1-%d characters", cfg.ID, unix.IFNAMSIZ-1-len(HostLinkPrefix))
	}
	p = &Path{id: cfg.ID, hostLink: HostLinkPrefix + cfg.ID, ns: cfg.Namespace, named: map[netip.Addr]*namedState{}, track: cfg.Track}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("kernel path: %w", err), p.Close())
		}
	}()
	nft, err := nftables.New()
	if err != nil {
		return p, fmt.Errorf("nftables: %w", err)
	}
	if chain, err := forwardDropper(nft); err != nil {
		return p, err
	} else if chain != "" {
		return p, fmt.Errorf("the host's firewall drops forwarded packets by default (%s): the kernel path's flows would be dropped there; accept iifname %s* and their replies there to have it", chain, HostLinkPrefix)
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return p, fmt.Errorf("netlink: %w", err)
	}
	defer host.Close()
	if p.routes, err = hostRoutes(host); err != nil {
		return p, err
	}
	if err := p.addLink(host); err != nil {
		return p, err
	}
	if err := p.configureHost(); err != nil {
		return p, err
	}
	p.hostRulesAdded = true
	nsh, err := vns.GetFromPath(p.ns.Path())
	if err != nil {
		return p, fmt.Errorf("open %s: %w", p.ns, err)
	}
	defer nsh.Close()
	if p.inside, err = netlink.NewHandleAt(nsh); err != nil {
		return p, fmt.Errorf("netlink in %s: %w", p.ns, err)
	}
	if err := cfg.Namespace.Do(p.sandboxSysctls); err != nil {
		return p, err
	}
	if err := p.configureSandbox(cfg.Steps); err != nil {
		return p, err
	}
	if !p.track {
		if err := p.untrack(); err != nil {
			return p, err
		}
	}
	return p, nil
}

// addLink picks a free /30 and creates the veth pair with it, under a lock
// so that two runs never pick the same.
func (p *Path) addLink(h *netlink.Handle) error {
	unlock, err := lockPicking()
	if err != nil {
		return err
	}
	defer unlock()

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
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: netns.IPNet(p.hostAddr)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", p.hostAddr, p.hostLink, err)
	}
	// Forwarding for this link only: it lets the sandbox's packets through;
	// replies need it on the link they come in by (see hostRoutes).
	if err := netns.WriteSysctl(filepath.Join("net/ipv4/conf", p.hostLink, "forwarding"), "1"); err != nil {
		return err
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", p.hostLink, err)
	}
	return nil
}

// lockPicking takes pickLock, waiting for another run to release it.
func lockPicking() (func(), error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: pickLock, Net: "unix"})
		if err == nil {
			return func() { ln.Close() }, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
			return nil, fmt.Errorf("lock %s: %w", pickLock, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
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

// sandboxSysctls runs inside the sandbox.
func (p *Path) sandboxSysctls() error {
	// Replies come in on the veth from addresses the main table routes to
	// the TUN: strict reverse-path filtering would drop them.
	for _, key := range []string{"net/ipv4/conf/all/rp_filter", filepath.Join("net/ipv4/conf", SandboxLink, "rp_filter")} {
		if err := netns.WriteSysctl(key, "0"); err != nil {
			return err
		}
	}
	if p.track {
		// Per namespace: the host's conntrack is not changed.
		for _, key := range []string{"net/netfilter/nf_conntrack_acct", "net/netfilter/nf_conntrack_timestamp"} {
			if err := netns.WriteSysctl(key, "1"); err != nil {
				return err
			}
		}
	}
	return nil
}

// configureSandbox gives the sandbox's end its address and fills in the
// kernel path's table and rules.
func (p *Path) configureSandbox(steps []policy.Step) error {
	h := p.inside
	tun, err := h.LinkByName(netns.LinkName)
	if err != nil {
		return fmt.Errorf("find %s in the sandbox: %w", netns.LinkName, err)
	}
	p.tunIndex = tun.Attrs().Index
	l, err := h.LinkByName(SandboxLink)
	if err != nil {
		return fmt.Errorf("find %s in the sandbox: %w", SandboxLink, err)
	}
	p.vethIndex = l.Attrs().Index
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: netns.IPNet(p.sandboxAddr)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", p.sandboxAddr, SandboxLink, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", SandboxLink, err)
	}
	if err := p.addRoutes(h, l); err != nil {
		return err
	}
	return p.addRules(h, steps)
}

// Forwards says whether the host takes a flow to a on the kernel path: a
// flow the rules mark for it that the host would not forward goes to the
// router instead.
func (p *Path) Forwards(a netip.Addr) bool {
	a = a.Unmap()
	for _, n := range neverKernel {
		if n.Contains(a) {
			return false
		}
	}
	r, ok := lookup(p.routes, a)
	return ok && r.forward
}

// SandboxAddr is the sandbox's address on the veth.
func (p *Path) SandboxAddr() netip.Addr { return p.sandboxAddr.Addr() }

// Close removes what Setup made outside the sandbox (what is inside goes
// with the namespace). It may be called on a half-built Path.
func (p *Path) Close() error {
	p.mu.Lock()
	if p.inside != nil {
		p.inside.Close()
		p.inside = nil
	}
	for _, st := range p.named {
		if st.expiry != nil {
			st.expiry.Stop()
		}
	}
	p.mu.Unlock()
	if p.hostRulesAdded && p.removeHostRules() == nil {
		// The link (and its other end) next; one iptables exec spared.
		return deleteLink(p.hostLink)
	}
	return RemoveLeftovers(p.id)
}
