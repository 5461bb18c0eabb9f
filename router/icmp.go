package router

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// sendUnreachable answers a blocked UDP datagram with ICMP "port
// unreachable", so the app's socket fails at once with ECONNREFUSED instead
// of waiting for an answer that never comes. The quoted packet is rebuilt
// from the flow's addresses: the kernel matches the error to the socket by
// the quoted IP and UDP headers alone.
func (r *Router) sendUnreachable(app, dst netip.AddrPort) {
	var pkt []byte
	if dst.Addr().Is4() {
		pkt = icmpv4PortUnreachable(app, dst)
	} else {
		pkt = icmpv6PortUnreachable(app, dst)
	}
	proto := header.IPv4ProtocolNumber
	if !dst.Addr().Is4() {
		proto = header.IPv6ProtocolNumber
	}
	r.stack.WriteRawPacket(nicID, proto, buffer.MakeWithData(pkt))
}

func quotedUDP(app, dst netip.AddrPort) []byte {
	u := header.UDP(make([]byte, header.UDPMinimumSize))
	u.Encode(&header.UDPFields{SrcPort: app.Port(), DstPort: dst.Port(), Length: header.UDPMinimumSize})
	return u
}

func icmpv4PortUnreachable(app, dst netip.AddrPort) []byte {
	quoted := make([]byte, header.IPv4MinimumSize)
	qip := header.IPv4(quoted)
	qip.Encode(&header.IPv4Fields{
		TotalLength: header.IPv4MinimumSize + header.UDPMinimumSize, TTL: 64,
		Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr:  tcpip.AddrFrom4(app.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4()),
	})
	qip.SetChecksum(^qip.CalculateChecksum())
	quoted = append(quoted, quotedUDP(app, dst)...)

	total := header.IPv4MinimumSize + header.ICMPv4MinimumSize + len(quoted)
	pkt := make([]byte, total)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(total), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(dst.Addr().As4()), DstAddr: tcpip.AddrFrom4(app.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(pkt[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4DstUnreachable)
	icmp.SetCode(header.ICMPv4PortUnreachable)
	copy(icmp[header.ICMPv4MinimumSize:], quoted)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return pkt
}

func icmpv6PortUnreachable(app, dst netip.AddrPort) []byte {
	// The error goes from the destination to the app; it quotes the app's
	// datagram, which went the other way.
	from, to := tcpip.AddrFrom16(dst.Addr().As16()), tcpip.AddrFrom16(app.Addr().As16())
	quoted := make([]byte, header.IPv6MinimumSize)
	header.IPv6(quoted).Encode(&header.IPv6Fields{
		PayloadLength: header.UDPMinimumSize, TransportProtocol: header.UDPProtocolNumber, HopLimit: 64,
		SrcAddr: to, DstAddr: from,
	})
	quoted = append(quoted, quotedUDP(app, dst)...)

	icmpLen := header.ICMPv6DstUnreachableMinimumSize + len(quoted)
	pkt := make([]byte, header.IPv6MinimumSize+icmpLen)
	header.IPv6(pkt).Encode(&header.IPv6Fields{
		PayloadLength: uint16(icmpLen), TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: 64,
		SrcAddr: from, DstAddr: to,
	})
	icmp := header.ICMPv6(pkt[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6DstUnreachable)
	icmp.SetCode(header.ICMPv6PortUnreachable)
	copy(icmp[header.ICMPv6DstUnreachableMinimumSize:], quoted)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: from, Dst: to}))
	return pkt
}
