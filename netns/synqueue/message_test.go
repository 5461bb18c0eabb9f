package synqueue

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
)

// attr is a netlink attribute as the kernel lays it out: native-endian
// length and type, the data, padding to 4 bytes.
func attr(typ uint16, data ...byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestMessagesFollowTheKernelsLayout(t *testing.T) {
	gen := []byte{0, 0, 0x01, 0x2c} // AF_UNSPEC, v0, queue 300
	bind, err := bindMessage(300)
	if err != nil {
		t.Fatal(err)
	}
	params, err := paramsMessage(300, 16384)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		got   netlink.Message
		typ   netlink.HeaderType
		flags netlink.HeaderFlags
		data  []byte
	}{
		{"bind", bind, 0x302, netlink.Request | netlink.Acknowledge, cat(gen, attr(1, 1, 0, 0, 0))},
		{"params", params, 0x302, netlink.Request | netlink.Acknowledge, cat(gen,
			attr(2, 0, 0, 0, 128, 2), attr(3, 0, 0, 0x40, 0), attr(4, 0, 0, 0, 1), attr(5, 0, 0, 0, 1))},
		{"accept with mark", verdictMessage(300, 0x01020304, true, 0x10000, true), 0x301, netlink.Request, cat(gen,
			attr(2, 0, 0, 0, 1, 1, 2, 3, 4), attr(3, 0, 1, 0, 0))},
		{"accept keeping the mark", verdictMessage(300, 7, true, 0x10000, false), 0x301, netlink.Request, cat(gen,
			attr(2, 0, 0, 0, 1, 0, 0, 0, 7))},
		{"drop", verdictMessage(300, 7, false, 0x10000, true), 0x301, netlink.Request, cat(gen,
			attr(2, 0, 0, 0, 0, 0, 0, 0, 7))},
	} {
		if tc.got.Header.Type != tc.typ || tc.got.Header.Flags != tc.flags || !bytes.Equal(tc.got.Data, tc.data) {
			t.Errorf("%s: type %#x flags %v data % x; want %#x %v % x", tc.name, tc.got.Header.Type, tc.got.Header.Flags, tc.got.Data, tc.typ, tc.flags, tc.data)
		}
	}
}

// packetData is an NFQNL_MSG_PACKET's data as the kernel sends it.
func packetData(id, mark, outdev uint32, payload []byte) []byte {
	hdr := binary.BigEndian.AppendUint32(nil, id)
	hdr = append(hdr, 0x08, 0x00, 3) // ETH_P_IP, NF_INET_LOCAL_OUT
	return cat([]byte{2, 0, 0, 7},
		attr(attrPacketHdr, hdr...),
		attr(attrMark, binary.BigEndian.AppendUint32(nil, mark)...),
		attr(attrOutDev, binary.BigEndian.AppendUint32(nil, outdev)...),
		attr(5, 0, 0, 0, 9),                                     // NFQA_IFINDEX_INDEV, ignored
		attr(4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2), // NFQA_TIMESTAMP, ignored
		attr(attrPayload, payload...))
}

func TestParsePacketMessage(t *testing.T) {
	syn := synPacket(src4, dst4, tcpSYN)
	p, err := parsePacketMessage(packetData(42, 0x7470, 5, syn))
	if err != nil || p.id != 42 || p.mark != 0x7470 || p.outDev != 5 || !bytes.Equal(p.payload, syn) {
		t.Fatalf("parsePacketMessage = %+v, %v", p, err)
	}
	for name, data := range map[string][]byte{
		"short":              {2, 0},
		"no packet header":   cat([]byte{2, 0, 0, 7}, attr(attrPayload, syn...)),
		"short header":       cat([]byte{2, 0, 0, 7}, attr(attrPacketHdr, 0, 0, 0, 1)),
		"attribute past end": cat([]byte{2, 0, 0, 7}, attr(attrPacketHdr, 0, 0, 0, 1, 8, 0, 3))[:10],
		"mark of 2 bytes":    cat([]byte{2, 0, 0, 7}, attr(attrPacketHdr, 0, 0, 0, 1, 8, 0, 3), attr(attrMark, 0, 1)),
	} {
		if p, err := parsePacketMessage(data); err == nil {
			t.Errorf("%s: parsePacketMessage = %+v; want an error", name, p)
		}
	}
}

// FuzzParsePacketMessage checks that no message from the kernel makes the
// parser panic, and that a parsed payload is a part of the message.
func FuzzParsePacketMessage(f *testing.F) {
	f.Add(packetData(1, 0, 3, synPacket(src4, dst4, tcpSYN)))
	f.Add(packetData(2, 0x10000, 3, synPacket(src6, dst6, tcpSYN)))
	f.Add([]byte{2, 0, 0, 7, 4, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		data = append([]byte(nil), data...)[:len(data):len(data)]
		p, err := parsePacketMessage(data)
		if err != nil {
			return
		}
		if len(p.payload) > len(data) {
			t.Fatalf("payload of %d bytes from a message of %d", len(p.payload), len(data))
		}
		parseSYN(p.payload)
	})
}
