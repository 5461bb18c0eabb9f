package synqueue

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// synPacket builds a TCP SYN from src to dst as the kernel sends it (no
// TCP options), with the IPv6 extension headers ext (each: next-header
// value, bytes) between the IPv6 header and TCP.
func synPacket(src, dst netip.AddrPort, flags byte, ext ...[]byte) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	tcp[12] = 5 << 4
	tcp[13] = flags
	if src.Addr().Is4() {
		ip := make([]byte, 20)
		ip[0] = 4<<4 | 5
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(tcp)))
		ip[6] = 0x40 // DF
		ip[8] = 64
		ip[9] = protoTCP
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		return append(ip, tcp...)
	}
	ip := make([]byte, 40)
	ip[0] = 6 << 4
	ip[7] = 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	var body []byte
	next := byte(protoTCP)
	// Chain the extension headers: each names the one after it.
	for i := len(ext) - 1; i >= 0; i-- {
		h := append([]byte(nil), ext[i][1:]...)
		h[0] = next
		next = ext[i][0]
		body = append(h, body...)
	}
	ip[6] = next
	body = append(body, tcp...)
	binary.BigEndian.PutUint16(ip[4:], uint16(len(body)))
	return append(ip, body...)
}

// extHeader is an extension header of kind proto and n bytes (a multiple
// of 8), prefixed with proto for synPacket.
func extHeader(proto byte, n int) []byte {
	h := make([]byte, 1+n)
	h[0] = proto
	switch proto {
	case protoAH:
		h[2] = byte(n/4 - 2)
	case protoFragment:
	default:
		h[2] = byte(n/8 - 1)
	}
	return h
}

var (
	src4 = netip.MustParseAddrPort("198.51.100.2:40001")
	dst4 = netip.MustParseAddrPort("198.51.100.9:80")
	src6 = netip.MustParseAddrPort("[2001:db8:5::2]:40002")
	dst6 = netip.MustParseAddrPort("[2001:db8:5::9]:443")
)

func TestParseSYNReadsBothFamiliesAndExtensionHeaders(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
		ext      [][]byte
	}{
		{"IPv4", src4, dst4, nil},
		{"IPv6", src6, dst6, nil},
		{"IPv6 hop-by-hop, routing, destination options", src6, dst6, [][]byte{extHeader(protoHopOpts, 8), extHeader(protoRouting, 24), extHeader(protoDstOpts, 16)}},
		{"IPv6 first fragment and AH", src6, dst6, [][]byte{extHeader(protoFragment, 8), extHeader(protoAH, 16)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := synPacket(tc.src, tc.dst, tcpSYN, tc.ext...)
			src, dst, err := parseSYN(b)
			if err != nil || src != tc.src || dst != tc.dst {
				t.Fatalf("parseSYN = %v, %v, %v; want %v, %v", src, dst, err, tc.src, tc.dst)
			}
			// Every cut short of the TCP flags fails, never panics.
			for n := range len(b) - 20 + tcpFlagsEnd {
				if _, _, err := parseSYN(b[:n]); err == nil {
					t.Errorf("parseSYN of the first %d bytes succeeded", n)
				}
			}
		})
	}
}

func TestParseSYNRefusesWhatIsNotAFirstSYN(t *testing.T) {
	frag := synPacket(src4, dst4, tcpSYN)
	binary.BigEndian.PutUint16(frag[6:], 1) // offset 8
	frag6 := synPacket(src6, dst6, tcpSYN, extHeader(protoFragment, 8))
	binary.BigEndian.PutUint16(frag6[42:], 1<<3)
	udp := synPacket(src4, dst4, tcpSYN)
	udp[9] = 17
	badIHL := synPacket(src4, dst4, tcpSYN)
	badIHL[0] = 4<<4 | 4
	longIHL := synPacket(src4, dst4, tcpSYN)
	longIHL[0] = 4<<4 | 15
	tooMany := make([][]byte, maxExtHeaders+1)
	for i := range tooMany {
		tooMany[i] = extHeader(protoDstOpts, 8)
	}
	for name, b := range map[string][]byte{
		"SYN-ACK":              synPacket(src4, dst4, tcpSYN|tcpACK),
		"SYN+RST":              synPacket(src6, dst6, tcpSYN|tcpRST),
		"SYN+FIN":              synPacket(src4, dst4, tcpSYN|tcpFIN),
		"ACK":                  synPacket(src4, dst4, tcpACK),
		"later IPv4 fragment":  frag,
		"later IPv6 fragment":  frag6,
		"UDP":                  udp,
		"IPv4 IHL 16":          badIHL,
		"IPv4 IHL past end":    longIHL,
		"IPv6 no next header":  synPacket(src6, dst6, tcpSYN, extHeader(protoNoNext, 8)),
		"IPv6 unknown header":  synPacket(src6, dst6, tcpSYN, extHeader(135, 8)),
		"IPv6 9 ext headers":   synPacket(src6, dst6, tcpSYN, tooMany...),
		"IP version 5":         append([]byte{5 << 4}, make([]byte, 60)...),
		"empty":                nil,
		"IPv6 header past end": synPacket(src6, dst6, tcpSYN, extHeader(protoHopOpts, 8))[:45],
	} {
		if src, dst, err := parseSYN(b); err == nil {
			t.Errorf("%s: parseSYN = %v, %v; want an error", name, src, dst)
		}
	}
}

// FuzzParseSYN checks that no input makes the parser panic or read past
// what it was given, and that what it accepts agrees with the bytes.
func FuzzParseSYN(f *testing.F) {
	f.Add(synPacket(src4, dst4, tcpSYN))
	f.Add(synPacket(src6, dst6, tcpSYN))
	f.Add(synPacket(src6, dst6, tcpSYN, extHeader(protoHopOpts, 8), extHeader(protoFragment, 8), extHeader(protoAH, 16)))
	f.Add(synPacket(src4, dst4, tcpSYN|tcpACK))
	f.Add([]byte{0x45})
	f.Add([]byte{0x60})
	f.Fuzz(func(t *testing.T, b []byte) {
		// A copy of exactly len(b) bytes: any read past the end panics.
		b = append([]byte(nil), b...)[:len(b):len(b)]
		src, dst, err := parseSYN(b)
		if err != nil {
			return
		}
		switch b[0] >> 4 {
		case 4:
			if !src.Addr().Is4() || !dst.Addr().Is4() || src.Addr().As4() != [4]byte(b[12:16]) || dst.Addr().As4() != [4]byte(b[16:20]) {
				t.Fatalf("IPv4 packet read as %v -> %v", src, dst)
			}
			if sp := binary.BigEndian.Uint16(b[int(b[0]&0xf)*4:]); sp != src.Port() {
				t.Fatalf("source port %d, packet says %d", src.Port(), sp)
			}
		case 6:
			if !src.Addr().Is6() || src.Addr().As16() != [16]byte(b[8:24]) || dst.Addr().As16() != [16]byte(b[24:40]) {
				t.Fatalf("IPv6 packet read as %v -> %v", src, dst)
			}
		default:
			t.Fatalf("version %d accepted", b[0]>>4)
		}
	})
}
