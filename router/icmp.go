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
	v6 := !dst.Addr().Is4()
	r.writeRaw(v6, dstUnreachable(dst.Addr(), app.Addr(), quotedUDP(app, dst, v6), v6,
		header.ICMPv4PortUnreachable, header.ICMPv6PortUnreachable))
}

// quotedUDP is the app's datagram as an ICMP error quotes it: its IP header
// and UDP header, app → destination.
func quotedUDP(app, dst netip.AddrPort, v6 bool) []byte {
	u := header.UDP(make([]byte, header.UDPMinimumSize))
	u.Encode(&header.UDPFields{SrcPort: app.Port(), DstPort: dst.Port(), Length: header.UDPMinimumSize})
	if v6 {
		return append(ipv6Header(app.Addr(), dst.Addr(), header.UDPProtocolNumber, len(u)), u...)
	}
	return append(ipv4Header(app.Addr(), dst.Addr(), header.UDPProtocolNumber, len(u)), u...)
}

// dstUnreachable is an ICMP "destination unreachable" from from to to,
// quoting the app's packet, with code4 or code6 for the family.
func dstUnreachable(from, to netip.Addr, quoted []byte, v6 bool, code4 header.ICMPv4Code, code6 header.ICMPv6Code) []byte {
	if !v6 {
		body := make([]byte, header.ICMPv4MinimumSize+len(quoted))
		m := header.ICMPv4(body)
		m.SetType(header.ICMPv4DstUnreachable)
		m.SetCode(code4)
		copy(body[header.ICMPv4MinimumSize:], quoted)
		m.SetChecksum(^checksum.Checksum(m, 0))
		return append(ipv4Header(from, to, header.ICMPv4ProtocolNumber, len(body)), body...)
	}
	body := make([]byte, header.ICMPv6DstUnreachableMinimumSize+len(quoted))
	m := header.ICMPv6(body)
	m.SetType(header.ICMPv6DstUnreachable)
	m.SetCode(code6)
	copy(body[header.ICMPv6DstUnreachableMinimumSize:], quoted)
	m.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m, Src: tcpip.AddrFrom16(from.As16()), Dst: tcpip.AddrFrom16(to.As16())}))
	return append(ipv6Header(from, to, header.ICMPv6ProtocolNumber, len(body)), body...)
}

// writeRaw sends a whole IP packet to the app through the netstack's NIC.
func (r *Router) writeRaw(v6 bool, pkt []byte) {
	proto := header.IPv4ProtocolNumber
	if v6 {
		proto = header.IPv6ProtocolNumber
	}
	r.stack.WriteRawPacket(nicID, proto, buffer.MakeWithData(pkt))
}

func ipv4Header(from, to netip.Addr, proto tcpip.TransportProtocolNumber, payload int) []byte {
	b := make([]byte, header.IPv4MinimumSize)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinimumSize + payload), TTL: 64, Protocol: uint8(proto),
		SrcAddr: tcpip.AddrFrom4(from.As4()), DstAddr: tcpip.AddrFrom4(to.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	return b
}

func ipv6Header(from, to netip.Addr, proto tcpip.TransportProtocolNumber, payload int) []byte {
	b := make([]byte, header.IPv6MinimumSize)
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength: uint16(payload), TransportProtocol: proto, HopLimit: 64,
		SrcAddr: tcpip.AddrFrom16(from.As16()), DstAddr: tcpip.AddrFrom16(to.As16()),
	})
	return b
}
