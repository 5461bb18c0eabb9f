package netns

import "net/netip"

// The sandbox's address plan. 198.18.0.0/15 is reserved for benchmarking
// (RFC 2544) and fd74:7270::/48 is a private ULA ("tp"), so neither collides
// with the host's or a cluster's routes.
const (
	// LinkName is the TUN link inside the sandbox.
	LinkName = "tp0"
	// DefaultMTU is the TUN link's MTU unless SandboxLink.MTU says otherwise.
	DefaultMTU = 65520
	// RouterMark is the socket mark (SO_MARK) of the router's own sockets
	// inside the sandbox; packets carrying it skip the loopback redirect.
	RouterMark = 0x7470
	// LoopbackChain is the nat chain, jumped to from OUTPUT, that redirects
	// the app's loopback traffic to the router (iptables and ip6tables).
	LoopbackChain = "TP_LOOPBACK"
)

var (
	// SandboxAddr4 is the sandbox's own IPv4 address on LinkName.
	SandboxAddr4 = netip.MustParsePrefix("198.18.0.2/15")
	// SandboxAddr6 is the sandbox's own IPv6 address on LinkName.
	SandboxAddr6 = netip.MustParsePrefix("fd74:7270::2/64")
	// DNSAddr4 and DNSAddr6 are the DNS server the router answers for.
	DNSAddr4 = netip.MustParseAddr("198.18.0.53")
	DNSAddr6 = netip.MustParseAddr("fd74:7270::53")
	// LoopbackNet4 is the part of IPv4 loopback that is redirected; it maps
	// 1:1 onto LoopbackAlias4, so 127.0.0.1:P reaches the router as
	// 198.19.0.1:P.
	LoopbackNet4   = netip.MustParsePrefix("127.0.0.0/16")
	LoopbackAlias4 = netip.MustParsePrefix("198.19.0.0/16")
	// LoopbackAlias6 is where the app's [::1]:P reaches the router.
	LoopbackAlias6 = netip.MustParseAddr("fd74:7270:ffff::1")
)

// LoopbackToAlias returns the address the router sees for a loopback
// destination the app dialed: 127.a.b.c (within LoopbackNet4) becomes
// 198.19.b.c and ::1 becomes LoopbackAlias6. Any other address is returned
// unchanged.
func LoopbackToAlias(a netip.Addr) netip.Addr {
	a = a.Unmap()
	switch {
	case a.Is4() && LoopbackNet4.Contains(a):
		b := a.As4()
		alias := LoopbackAlias4.Addr().As4()
		return netip.AddrFrom4([4]byte{alias[0], alias[1], b[2], b[3]})
	case a == netip.IPv6Loopback():
		return LoopbackAlias6
	}
	return a
}

// AliasToLoopback undoes LoopbackToAlias: for an address in LoopbackAlias4
// or equal to LoopbackAlias6 it returns the loopback address the app dialed
// and true; otherwise the address unchanged and false.
func AliasToLoopback(a netip.Addr) (netip.Addr, bool) {
	a = a.Unmap()
	switch {
	case a.Is4() && LoopbackAlias4.Contains(a):
		b := a.As4()
		lo := LoopbackNet4.Addr().As4()
		return netip.AddrFrom4([4]byte{lo[0], lo[1], b[2], b[3]}), true
	case a == LoopbackAlias6:
		return netip.IPv6Loopback(), true
	}
	return a, false
}
