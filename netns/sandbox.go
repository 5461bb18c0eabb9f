package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// SandboxLink are the options of SetupSandbox. The zero value is the
// default plan: LinkName, DefaultMTU, IPv4 and IPv6.
type SandboxLink struct {
	// Name of the TUN link; "" means LinkName.
	Name string
	// MTU of the TUN link; 0 means DefaultMTU. 1280 (the IPv6 minimum)
	// to 65535.
	MTU int
	// NoIPv6 leaves IPv6 out: no address, route or ip6tables rules.
	NoIPv6 bool
	// Offload opens the TUN with IFF_VNET_HDR and checksum and TSO
	// offloads: every packet read from or written to the file then starts
	// with a virtio_net_hdr (router.NewTUNEndpoint speaks both forms).
	Offload bool
}

func (o SandboxLink) withDefaults() (SandboxLink, error) {
	if o.Name == "" {
		o.Name = LinkName
	}
	if len(o.Name) >= unix.IFNAMSIZ || o.Name == "." || o.Name == ".." {
		return o, fmt.Errorf("SandboxLink.Name %q is invalid: want 1-%d characters", o.Name, unix.IFNAMSIZ-1)
	}
	for _, c := range o.Name {
		if c == '/' || c == ':' || c <= ' ' || c > '~' {
			return o, fmt.Errorf("SandboxLink.Name %q is invalid: want printable ASCII without '/', ':' or spaces", o.Name)
		}
	}
	if o.MTU == 0 {
		o.MTU = DefaultMTU
	}
	if o.MTU < 1280 || o.MTU > 65535 {
		return o, fmt.Errorf("SandboxLink.MTU %d is invalid: want 1280-65535 (0 for %d)", o.MTU, DefaultMTU)
	}
	return o, nil
}

// SetupSandbox prepares the inside of n for the router and returns the TUN
// file, whose other end is the sandbox's default route:
//
//   - lo up;
//   - the TUN link (IFF_TUN|IFF_NO_PI, not persistent), MTU, addresses
//     SandboxAddr4 and SandboxAddr6 (without DAD, usable at once), up;
//   - default routes for both families through the link, with src set;
//   - route_localnet, so redirected loopback traffic may leave through it;
//   - the loopback redirect (nat chain LoopbackChain).
//
// Reads and writes on the file are whole IP packets with no extra header
// (with Offload, each preceded by a virtio_net_hdr).
// The file is non-blocking and registered with Go's poller: use Read,
// Write or SyscallConn; calling Fd switches it back to blocking mode.
// Closing the file removes the link. Everything happens inside n in this
// one step, which keeps no state outside it; on error the file is closed
// and n should be deleted.
func SetupSandbox(n *Namespace, opts SandboxLink) (*os.File, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var tun *os.File
	err = n.Do(func() error {
		var err error
		tun, err = setupInside(opts)
		return err
	})
	if err != nil {
		if tun != nil {
			tun.Close()
		}
		return nil, fmt.Errorf("set up sandbox in netns %q: %w", n.name, err)
	}
	return tun, nil
}

// setupInside runs on a thread inside the sandbox namespace. It returns the
// TUN file even on a later error, so the caller can close it.
func setupInside(opts SandboxLink) (*os.File, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()

	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("set lo up: %w", err)
	}

	tun, err := openTUN(opts.Name, opts.Offload)
	if err != nil {
		return nil, err
	}
	addrs := []netip.Prefix{SandboxAddr4}
	if !opts.NoIPv6 {
		addrs = append(addrs, SandboxAddr6)
	}
	link, err := configureTUNLink(h, opts, addrs)
	if err != nil {
		return tun, err
	}
	if err := addDefaultRoutes(h, link, opts.Name, addrs); err != nil {
		return tun, err
	}
	if !opts.NoIPv6 {
		if err := addLoopback6Return(h, link.Attrs().Index); err != nil {
			return tun, err
		}
	}
	if err := writeSandboxSysctls(opts.Name); err != nil {
		return tun, err
	}

	if err := installLoopbackRules(iptables.ProtocolIPv4, opts.Name); err != nil {
		return tun, err
	}
	if !opts.NoIPv6 {
		if err := installLoopbackRules(iptables.ProtocolIPv6, opts.Name); err != nil {
			return tun, err
		}
	}
	return tun, nil
}

// configureTUNLink gives the open TUN link its MTU and addresses and sets
// it up.
func configureTUNLink(h *netlink.Handle, opts SandboxLink, addrs []netip.Prefix) (netlink.Link, error) {
	link, err := h.LinkByName(opts.Name)
	if err != nil {
		return nil, fmt.Errorf("find link %s: %w", opts.Name, err)
	}
	if err := h.LinkSetMTU(link, opts.MTU); err != nil {
		return nil, fmt.Errorf("set MTU %d on %s: %w", opts.MTU, opts.Name, err)
	}
	if !opts.NoIPv6 {
		// No link-local address: it would only put router solicitations
		// and MLD reports on the TUN for the router to throw away.
		if err := h.LinkSetIP6AddrGenMode(link, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
			return nil, fmt.Errorf("disable IPv6 link-local address on %s: %w", opts.Name, err)
		}
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: IPNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil {
			return nil, fmt.Errorf("add address %s to %s: %w", p, opts.Name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", opts.Name, err)
	}
	return link, nil
}

// addDefaultRoutes sends each family's traffic through the link, from the
// sandbox's address of that family.
func addDefaultRoutes(h *netlink.Handle, link netlink.Link, name string, addrs []netip.Prefix) error {
	for _, p := range addrs {
		bits := p.Addr().BitLen()
		r := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)},
			Src:       p.Addr().AsSlice(),
			Scope:     netlink.SCOPE_LINK,
		}
		if p.Addr().Is6() {
			r.Scope = netlink.SCOPE_UNIVERSE
		}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("add default route dev %s src %s: %w", name, p.Addr(), err)
		}
	}
	return nil
}

// writeSandboxSysctls sets the namespace's sysctls: route_localnet, so that
// redirected loopback traffic may leave through the link named name,
// unprivileged ping and unprivileged low ports.
func writeSandboxSysctls(name string) error {
	sysctls := map[string]string{
		"net/ipv4/conf/all/route_localnet":                     "1",
		filepath.Join("net/ipv4/conf", name, "route_localnet"): "1",
		// Lets the app ping as an ordinary user (ICMP datagram sockets), as
		// on most desktop distributions; harmless inside the sandbox.
		"net/ipv4/ping_group_range": "0 2147483647",
		// Lets the app, which runs as an ordinary user under sudo and
		// rootless, listen on a pod's port 80 as it would in a container
		// (Docker's default); the namespace's ports are the sandbox's own.
		"net/ipv4/ip_unprivileged_port_start": "0",
	}
	for key, val := range sysctls {
		err := WriteSysctl(key, val)
		if err != nil && key == "net/ipv4/ping_group_range" && errors.Is(err, unix.EINVAL) {
			// In a user namespace only its mapped groups are valid: a
			// rootless run maps the user's own.
			g := os.Getegid()
			err = WriteSysctl(key, fmt.Sprintf("%d %d", g, g))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// IPNet is p as netlink's routes and addresses take it.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// WriteSysctl writes /proc/sys/KEY. /proc/sys/net belongs to the network
// namespace of the thread that opens it: for a namespace's own, call it
// inside Do.
func WriteSysctl(key, val string) error {
	path := filepath.Join("/proc/sys", key)
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sysctl %s: %w (kernel without this feature?)", key, err)
		}
		return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
	}
	return nil
}

// addLoopback6Return lets the router's answers to redirected [::1] traffic
// in. Conntrack turns their destination back into ::1 before the input
// route lookup, and IPv6 looks up ::1 strictly on the incoming interface
// (rt6_need_strict), where only lo has it: without a local ::1 route on the
// TUN link the kernel drops them as unroutable. IPv6 has no route_localnet.
// The route's higher metric keeps lo's own ::1 route first for output.
func addLoopback6Return(h *netlink.Handle, index int) error {
	r := &netlink.Route{
		LinkIndex: index,
		Dst:       IPNet(netip.PrefixFrom(netip.IPv6Loopback(), 128)),
		Type:      unix.RTN_LOCAL,
		Table:     unix.RT_TABLE_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Priority:  1024,
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("add local route ::1 dev %d for redirected loopback replies: %w", index, err)
	}
	return nil
}
