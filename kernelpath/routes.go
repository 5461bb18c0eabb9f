package kernelpath

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostRoute is one IPv4 destination range of the host and whether the
// kernel path may take flows to it.
type hostRoute struct {
	prefix netip.Prefix
	// forward: the host forwards replies from the route's interface.
	forward bool
	dev     string
}

// hostRoutes reads the host's IPv4 main table and its local addresses.
// Replies to a forwarded flow come in on the route's interface, and the
// kernel forwards them only if that interface forwards: a route through
// one that does not is kept from the kernel path (a "throw" in its table).
func hostRoutes(h *netlink.Handle) ([]hostRoute, error) {
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list the host's routes: %w", err)
	}
	var out []hostRoute
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		p := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if r.Dst != nil {
			a, ok := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			if !ok {
				continue
			}
			p = netip.PrefixFrom(a.Unmap(), ones).Masked()
		}
		hr := hostRoute{prefix: p}
		if len(r.MultiPath) == 0 {
			if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
				hr.dev = l.Attrs().Name
				hr.forward = forwards(hr.dev)
			}
		}
		out = append(out, hr)
	}
	// The host's own addresses stay with the router: delivered locally, a
	// flow would not be masqueraded, and a server there would see the
	// veth's address where the router's dial shows the host's own (a
	// database's client rules would refuse it).
	addrs, err := h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list the host's addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap().IsLoopback() {
			continue
		}
		out = append(out, hostRoute{prefix: netip.PrefixFrom(ip.Unmap(), 32), dev: "local"})
	}
	return out, nil
}

// forwards reads net.ipv4.conf.DEV.forwarding.
func forwards(dev string) bool {
	if strings.ContainsAny(dev, "/.") {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", dev, "forwarding"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// lookup is the longest-prefix match over routes, as the kernel's.
func lookup(routes []hostRoute, a netip.Addr) (hostRoute, bool) {
	best, found := hostRoute{}, false
	for _, r := range routes {
		if r.prefix.Contains(a) && (!found || r.prefix.Bits() > best.prefix.Bits()) {
			best, found = r, true
		}
	}
	return best, found
}

// DefaultRoute says through which interface the host's IPv4 default route
// leaves and whether that interface forwards, which the kernel path needs
// for flows to destinations reached by it. dev is "" when the host has no
// default route.
func DefaultRoute() (dev string, forwards bool, err error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return "", false, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	routes, err := hostRoutes(h)
	if err != nil {
		return "", false, err
	}
	for _, r := range routes {
		if r.prefix.Bits() == 0 {
			return r.dev, r.forward, nil
		}
	}
	return "", false, nil
}
