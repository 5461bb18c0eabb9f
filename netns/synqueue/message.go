package synqueue

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink_queue's UAPI (linux/netfilter/nfnetlink_queue.h,
// linux/netfilter/nfnetlink.h), the numbers this package speaks.
const (
	subsysQueue = 3 // NFNL_SUBSYS_QUEUE

	msgPacket  = subsysQueue<<8 | 0 // NFQNL_MSG_PACKET: kernel to us
	msgVerdict = subsysQueue<<8 | 1 // NFQNL_MSG_VERDICT
	msgConfig  = subsysQueue<<8 | 2 // NFQNL_MSG_CONFIG

	// Config attributes (NFQA_CFG_*).
	attrCfgCmd    = 1
	attrCfgParams = 2
	attrCfgMaxLen = 3
	attrCfgMask   = 4
	attrCfgFlags  = 5

	cmdBind = 1 // NFQNL_CFG_CMD_BIND

	copyPacket = 2 // NFQNL_COPY_PACKET

	flagFailOpen = 1 // NFQA_CFG_F_FAIL_OPEN

	// Packet and verdict attributes (NFQA_*).
	attrPacketHdr  = 1
	attrVerdictHdr = 2
	attrMark       = 3
	attrOutDev     = 6 // NFQA_IFINDEX_OUTDEV
	attrPayload    = 10

	verdictDrop   = 0 // NF_DROP
	verdictAccept = 1 // NF_ACCEPT

	nfgenmsgLen  = 4 // struct nfgenmsg: family, version, be16 res_id
	packetHdrLen = 7 // struct nfqnl_msg_packet_hdr: be32 id, be16 hw_protocol, u8 hook
)

// copyRange is how much of each queued packet the kernel copies to us: an
// IPv6 header with a few extension headers and the start of the TCP header
// fit; the rest of a SYN (its options) is not needed.
const copyRange = 128

// nfgenmsg is the header in front of every nfnetlink message's attributes,
// here for queue num.
func nfgenmsg(num uint16) []byte {
	b := make([]byte, nfgenmsgLen)
	b[0] = unix.AF_UNSPEC
	b[1] = 0 // NFNETLINK_V0
	binary.BigEndian.PutUint16(b[2:], num)
	return b
}

// configMessage is one NFQNL_MSG_CONFIG for queue num with attrs.
func configMessage(num uint16, attrs []netlink.Attribute) (netlink.Message, error) {
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return netlink.Message{}, fmt.Errorf("encode queue %d config: %w", num, err)
	}
	return netlink.Message{
		Header: netlink.Header{Type: msgConfig, Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(nfgenmsg(num), b...),
	}, nil
}

// bindMessage binds queue num to the socket that sends it.
func bindMessage(num uint16) (netlink.Message, error) {
	// struct nfqnl_msg_config_cmd: u8 command, u8 pad, be16 pf (unused
	// since Linux 3.8).
	return configMessage(num, []netlink.Attribute{{Type: attrCfgCmd, Data: []byte{cmdBind, 0, 0, 0}}})
}

// paramsMessage sets copy-packet mode with copyRange, the queue's bound and
// FAIL_OPEN (a full queue lets packets through instead of dropping them).
func paramsMessage(num uint16, maxLen uint32) (netlink.Message, error) {
	// struct nfqnl_msg_config_params, packed: be32 copy_range, u8 copy_mode.
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, copyRange)
	params[4] = copyPacket
	return configMessage(num, []netlink.Attribute{
		{Type: attrCfgParams, Data: params},
		{Type: attrCfgMaxLen, Data: be32(maxLen)},
		{Type: attrCfgMask, Data: be32(flagFailOpen)},
		{Type: attrCfgFlags, Data: be32(flagFailOpen)},
	})
}

// verdictMessage gives packet id of queue num its verdict; with accept,
// mark replaces the packet's mark. The kernel answers only when it
// refuses it (no NLM_F_ACK): one message per verdict.
func verdictMessage(num uint16, id uint32, accept bool, mark uint32, setMark bool) netlink.Message {
	hdr := make([]byte, 8) // struct nfqnl_msg_verdict_hdr: be32 verdict, be32 id
	v := uint32(verdictDrop)
	if accept {
		v = verdictAccept
	}
	binary.BigEndian.PutUint32(hdr, v)
	binary.BigEndian.PutUint32(hdr[4:], id)
	attrs := []netlink.Attribute{{Type: attrVerdictHdr, Data: hdr}}
	if accept && setMark {
		attrs = append(attrs, netlink.Attribute{Type: attrMark, Data: be32(mark)})
	}
	// Fixed-size attributes cannot fail to encode.
	b, _ := netlink.MarshalAttributes(attrs)
	return netlink.Message{
		Header: netlink.Header{Type: msgVerdict, Flags: netlink.Request},
		Data:   append(nfgenmsg(num), b...),
	}
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// packet is one queued packet as the kernel reported it.
type packet struct {
	id      uint32
	mark    uint32
	outDev  uint32
	payload []byte // at most copyRange bytes of the IP packet
}

// parsePacketMessage reads an NFQNL_MSG_PACKET's data (nfgenmsg and
// attributes). It fails without a packet header; a packet without payload
// is returned with none (the caller passes it on).
func parsePacketMessage(data []byte) (packet, error) {
	var p packet
	if len(data) < nfgenmsgLen {
		return p, fmt.Errorf("queue message of %d bytes: want at least %d (nfgenmsg)", len(data), nfgenmsgLen)
	}
	ad, err := netlink.NewAttributeDecoder(data[nfgenmsgLen:])
	if err != nil {
		return p, fmt.Errorf("queue message attributes: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	haveHdr := false
	for ad.Next() {
		switch ad.Type() {
		case attrPacketHdr:
			b := ad.Bytes()
			if len(b) < packetHdrLen {
				return p, fmt.Errorf("queue packet header of %d bytes: want %d", len(b), packetHdrLen)
			}
			p.id = binary.BigEndian.Uint32(b)
			haveHdr = true
		case attrMark:
			p.mark = ad.Uint32()
		case attrOutDev:
			p.outDev = ad.Uint32()
		case attrPayload:
			p.payload = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return p, fmt.Errorf("queue message attributes: %w", err)
	}
	if !haveHdr {
		return p, fmt.Errorf("queue message without a packet header (NFQA_PACKET_HDR)")
	}
	return p, nil
}
