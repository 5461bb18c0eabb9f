package synqueue

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// SYN is a connection's first SYN, held in the queue until Verdict.
type SYN struct {
	// ID names the packet in the queue, for Verdict.
	ID uint32
	// Src is the app's address and port, Dst the destination it dialed.
	Src, Dst netip.AddrPort
	// Mark is the packet's mark as it was queued (the verdict replaces it).
	Mark uint32
	// OutIfindex is the index of the link the SYN was routed to (0 if the
	// kernel did not say).
	OutIfindex uint32
}

// IP and TCP header facts the parser needs (RFC 791, 8200, 9293).
const (
	ipv4MinHeader = 20
	ipv6Header    = 40
	tcpFlagsEnd   = 14 // the TCP header up to and with its flags byte

	protoTCP      = 6
	protoHopOpts  = 0
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoNoNext   = 59
	protoDstOpts  = 60

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10

	// maxExtHeaders bounds the IPv6 extension headers walked; copyRange
	// bounds them anyway, this keeps the loop's cost obvious.
	maxExtHeaders = 8
)

// parseSYN reads the addresses and ports of a TCP SYN (SYN set, ACK, RST
// and FIN clear) from an IPv4 or IPv6 packet, of which b may hold only the
// first bytes. Every offset is checked against len(b): a short, malformed
// or non-SYN packet is an error, never a panic.
func parseSYN(b []byte) (src, dst netip.AddrPort, err error) {
	if len(b) < 1 {
		return src, dst, fmt.Errorf("empty packet")
	}
	var srcIP, dstIP netip.Addr
	var tcp []byte
	switch v := b[0] >> 4; v {
	case 4:
		if len(b) < ipv4MinHeader {
			return src, dst, fmt.Errorf("IPv4 packet of %d bytes: want at least %d", len(b), ipv4MinHeader)
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < ipv4MinHeader || ihl > len(b) {
			return src, dst, fmt.Errorf("IPv4 header length %d: want %d to %d", ihl, ipv4MinHeader, len(b))
		}
		if b[9] != protoTCP {
			return src, dst, fmt.Errorf("IPv4 protocol %d: want TCP (%d)", b[9], protoTCP)
		}
		if off := binary.BigEndian.Uint16(b[6:8]) & 0x1fff; off != 0 {
			return src, dst, fmt.Errorf("IPv4 fragment at offset %d: want the first", off*8)
		}
		srcIP = netip.AddrFrom4([4]byte(b[12:16]))
		dstIP = netip.AddrFrom4([4]byte(b[16:20]))
		tcp = b[ihl:]
	case 6:
		if len(b) < ipv6Header {
			return src, dst, fmt.Errorf("IPv6 packet of %d bytes: want at least %d", len(b), ipv6Header)
		}
		srcIP = netip.AddrFrom16([16]byte(b[8:24]))
		dstIP = netip.AddrFrom16([16]byte(b[24:40]))
		tcp, err = ipv6TCP(b[6], b[ipv6Header:])
		if err != nil {
			return src, dst, err
		}
	default:
		return src, dst, fmt.Errorf("IP version %d: want 4 or 6", v)
	}
	if len(tcp) < tcpFlagsEnd {
		return src, dst, fmt.Errorf("TCP header cut at %d bytes: want at least %d", len(tcp), tcpFlagsEnd)
	}
	if f := tcp[13]; f&(tcpSYN|tcpACK|tcpRST|tcpFIN) != tcpSYN {
		return src, dst, fmt.Errorf("TCP flags %#02x: want a SYN without ACK, RST or FIN", f)
	}
	src = netip.AddrPortFrom(srcIP, binary.BigEndian.Uint16(tcp[0:2]))
	dst = netip.AddrPortFrom(dstIP, binary.BigEndian.Uint16(tcp[2:4]))
	return src, dst, nil
}

// ipv6TCP walks the extension headers after an IPv6 header (next is the
// fixed header's next-header field, rest what follows it) to the TCP
// header.
func ipv6TCP(next byte, rest []byte) ([]byte, error) {
	for i := 0; ; i++ {
		if next == protoTCP {
			return rest, nil
		}
		if i == maxExtHeaders {
			return nil, fmt.Errorf("more than %d IPv6 extension headers", maxExtHeaders)
		}
		if len(rest) < 8 {
			return nil, fmt.Errorf("IPv6 extension header %d cut at %d bytes: want at least 8", next, len(rest))
		}
		var n int
		switch next {
		case protoHopOpts, protoRouting, protoDstOpts:
			n = (int(rest[1]) + 1) * 8
		case protoAH:
			n = (int(rest[1]) + 2) * 4
		case protoFragment:
			if off := binary.BigEndian.Uint16(rest[2:4]) >> 3; off != 0 {
				return nil, fmt.Errorf("IPv6 fragment at offset %d: want the first", off*8)
			}
			n = 8
		case protoNoNext:
			return nil, fmt.Errorf("IPv6 packet without a TCP header (no next header)")
		default:
			return nil, fmt.Errorf("IPv6 next header %d: want TCP (%d) or an extension header", next, protoTCP)
		}
		if n > len(rest) {
			return nil, fmt.Errorf("IPv6 extension header %d of %d bytes cut at %d", next, n, len(rest))
		}
		next, rest = rest[0], rest[n:]
	}
}
