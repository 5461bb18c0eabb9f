// Package origdst tells where a TCP connection was going before the nat
// table redirected it to a local listener: conntrack's original tuple,
// which the kernel gives through SO_ORIGINAL_DST (IPv4) and
// IP6T_SO_ORIGINAL_DST (IPv6). The agent reads it for the pod's stolen
// connections, the router for the app's connections taken as kernel
// sockets.
package origdst

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h),
// which x/sys does not name; SO_ORIGINAL_DST is its IPv4 twin.
const ip6tSOOriginalDst = 80

// Of returns the destination c's peer dialed, for a connection that the
// nat table redirected to the listener that accepted c.
func Of(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	// The peer's family is the tuple's: an IPv4 peer, of an IPv4 socket or
	// (mapped) of a dual-stack one, has an IPv4 tuple.
	peer, _ := c.RemoteAddr().(*net.TCPAddr) // nil (a closed c): its getsockopt fails
	v4 := peer.AddrPort().Addr().Unmap().Is4()
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if v4 {
			// struct sockaddr_in fits the 20 bytes of an IPv6Mreq.
			m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if err != nil {
				serr = fmt.Errorf("SO_ORIGINAL_DST: %w", err)
				return
			}
			sa := m.Multiaddr
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4]))
			return
		}
		// struct sockaddr_in6 is the first 28 bytes of an IPv6MTUInfo.
		info, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst)
		if err != nil {
			serr = fmt.Errorf("IP6T_SO_ORIGINAL_DST: %w", err)
			return
		}
		// Port holds the network-order bytes as they lie in memory.
		port := binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, info.Addr.Port))
		dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), port)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %s (was it redirected by the nat table?): %w", c.RemoteAddr(), err)
	}
	return dst, nil
}
