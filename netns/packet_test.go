package netns_test

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"
)

// A minimal IP/TCP/UDP codec, enough for the tests to play the router on
// the TUN: see what the sandbox sends and answer it.

const (
	protoTCP = 6
	protoUDP = 17
)

type packet struct {
	src, dst netip.AddrPort
	proto    uint8
	seq, ack uint32 // TCP
	flags    uint8  // TCP
	payload  []byte
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

// parsePacket decodes an IPv4 or IPv6 packet carrying TCP or UDP (IPv6
// without extension headers); ok is false for anything else.
func parsePacket(b []byte) (p packet, ok bool) {
	if len(b) < 1 {
		return p, false
	}
	var l4 []byte
	var srcIP, dstIP netip.Addr
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return p, false
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || total > len(b) || total < ihl {
			return p, false
		}
		p.proto = b[9]
		srcIP = netip.AddrFrom4([4]byte(b[12:16]))
		dstIP = netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:total]
	case 6:
		if len(b) < 40 {
			return p, false
		}
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		if 40+plen > len(b) {
			return p, false
		}
		p.proto = b[6]
		srcIP = netip.AddrFrom16([16]byte(b[8:24]))
		dstIP = netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40 : 40+plen]
	default:
		return p, false
	}
	switch p.proto {
	case protoTCP:
		if len(l4) < 20 {
			return p, false
		}
		off := int(l4[12]>>4) * 4
		if off < 20 || off > len(l4) {
			return p, false
		}
		p.seq = binary.BigEndian.Uint32(l4[4:8])
		p.ack = binary.BigEndian.Uint32(l4[8:12])
		p.flags = l4[13]
		p.payload = l4[off:]
	case protoUDP:
		if len(l4) < 8 {
			return p, false
		}
		p.payload = l4[8:]
	default:
		return p, false
	}
	p.src = netip.AddrPortFrom(srcIP, binary.BigEndian.Uint16(l4[0:2]))
	p.dst = netip.AddrPortFrom(dstIP, binary.BigEndian.Uint16(l4[2:4]))
	return p, true
}

// marshal encodes p as an IPv4 or IPv6 packet with correct checksums.
func (p packet) marshal() []byte {
	var l4 []byte
	switch p.proto {
	case protoTCP:
		l4 = make([]byte, 20+len(p.payload))
		binary.BigEndian.PutUint32(l4[4:8], p.seq)
		binary.BigEndian.PutUint32(l4[8:12], p.ack)
		l4[12] = 5 << 4
		l4[13] = p.flags
		binary.BigEndian.PutUint16(l4[14:16], 65535)
		copy(l4[20:], p.payload)
	case protoUDP:
		l4 = make([]byte, 8+len(p.payload))
		binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
		copy(l4[8:], p.payload)
	}
	binary.BigEndian.PutUint16(l4[0:2], p.src.Port())
	binary.BigEndian.PutUint16(l4[2:4], p.dst.Port())

	src, dst := p.src.Addr().AsSlice(), p.dst.Addr().AsSlice()
	var pseudo []byte
	pseudo = append(pseudo, src...)
	pseudo = append(pseudo, dst...)
	if p.src.Addr().Is4() {
		pseudo = append(pseudo, 0, p.proto, byte(len(l4)>>8), byte(len(l4)))
	} else {
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(l4)))
		pseudo = append(pseudo, 0, 0, 0, p.proto)
	}
	sum := checksum(append(pseudo, l4...))
	if p.proto == protoUDP && sum == 0 {
		sum = 0xffff
	}
	csumAt := 16
	if p.proto == protoUDP {
		csumAt = 6
	}
	binary.BigEndian.PutUint16(l4[csumAt:], sum)

	if p.src.Addr().Is4() {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:4], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(h[6:8], 0x4000) // DF
		h[8] = 64
		h[9] = p.proto
		copy(h[12:16], src)
		copy(h[16:20], dst)
		binary.BigEndian.PutUint16(h[10:12], checksum(h))
		return append(h, l4...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(len(l4)))
	h[6] = p.proto
	h[7] = 64
	copy(h[8:24], src)
	copy(h[24:40], dst)
	return append(h, l4...)
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// readPacket returns the first TCP/UDP packet on tun that match accepts,
// skipping others (IPv6 neighbour discovery, MLD), or fails the test after
// a few seconds.
func readPacket(t *testing.T, tun *os.File, match func(packet) bool) packet {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	if err := tun.SetReadDeadline(deadline); err != nil {
		t.Fatalf("TUN read deadline: %v", err)
	}
	buf := make([]byte, 65536)
	for {
		n, err := tun.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("no matching packet on the TUN within 5s")
		}
		if err != nil {
			t.Fatalf("read TUN: %v", err)
		}
		if p, ok := parsePacket(buf[:n]); ok && match(p) {
			p.payload = append([]byte(nil), p.payload...)
			return p
		}
	}
}

func TestPacketRoundTrip(t *testing.T) {
	for _, p := range []packet{
		{src: netip.MustParseAddrPort("198.19.0.1:80"), dst: netip.MustParseAddrPort("198.18.0.2:5555"), proto: protoTCP, seq: 7, ack: 9, flags: tcpSYN | tcpACK},
		{src: netip.MustParseAddrPort("[fd74:7270:ffff::1]:53"), dst: netip.MustParseAddrPort("[fd74:7270::2]:4444"), proto: protoUDP, payload: []byte("hi")},
	} {
		b := p.marshal()
		q, ok := parsePacket(b)
		if !ok || q.src != p.src || q.dst != p.dst || q.seq != p.seq || q.ack != p.ack || q.flags != p.flags || string(q.payload) != string(p.payload) {
			t.Errorf("round trip of %+v gave %+v (ok=%v)", p, q, ok)
		}
	}
}
