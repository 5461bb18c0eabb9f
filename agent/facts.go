package agent

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// podFacts gathers what the sandbox copies from the pod: its hostname, its
// addresses (loopback and link-local left out: they mean nothing outside),
// and its resolver settings.
func podFacts(resolvConfPath string) (proto.Facts, error) {
	var f proto.Facts
	host, err := os.Hostname()
	if err != nil {
		return f, fmt.Errorf("read the pod's hostname: %w", err)
	}
	f.Hostname = host
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return f, fmt.Errorf("list the pod's addresses: %w", err)
	}
	for _, a := range addrs {
		p, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(p.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() {
			continue
		}
		f.Addresses = append(f.Addresses, ip)
	}
	rc, err := readResolvConf(resolvConfPath)
	if err != nil {
		return f, err
	}
	f.SearchDomains, f.Ndots, f.Options = rc.Search, rc.Ndots, rc.Options
	return f, nil
}
