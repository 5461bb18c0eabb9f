package kernelpath

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
)

// protoRule is a routing rule that matches a protocol, and a destination
// prefix and port when set.
type protoRule struct {
	priority int
	table    int
	proto    uint8
	dst      netip.Prefix // zero: any destination
	port     uint16       // 0: any port
	rule     string       // the policy rule it comes from, for errors
}

// addProtoRules adds rules in ns, in order, entering ns once. They are
// written here, not with netlink.Handle.RuleAdd: vishvananda/netlink
// v1.3.1 sends FRA_IP_PROTO as four bytes where the kernel takes one, so
// the kernel logged "attribute type 22 has an invalid length" for every
// such rule, and on a big-endian machine the rule would match protocol 0
// (upstream pull request #1190 changes it).
func addProtoRules(ns *netns.Namespace, rules []protoRule) error {
	if len(rules) == 0 {
		return nil
	}
	return ns.Do(func() error {
		for _, r := range rules {
			if err := addProtoRule(r); err != nil {
				return fmt.Errorf("routing rule %d for %q (kernels before 4.17 have no ipproto and dport in rules): %w", r.priority, r.rule, err)
			}
		}
		return nil
	})
}

// addProtoRule adds r in the calling thread's namespace.
func addProtoRule(r protoRule) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	msg := nl.NewRtMsg()
	msg.Family = unix.AF_INET
	msg.Protocol = unix.RTPROT_BOOT
	msg.Scope = unix.RT_SCOPE_UNIVERSE
	msg.Type = unix.FR_ACT_TO_TBL
	msg.Table = unix.RT_TABLE_UNSPEC
	if r.table < 256 {
		msg.Table = uint8(r.table)
	}
	var dst []byte
	if r.dst.IsValid() && r.dst.Bits() > 0 {
		if !r.dst.Addr().Is4() {
			return fmt.Errorf("destination %s is not IPv4", r.dst)
		}
		msg.Dst_len = uint8(r.dst.Bits())
		a := r.dst.Masked().Addr().As4()
		dst = a[:]
	}
	req.AddData(msg)
	if dst != nil {
		req.AddData(nl.NewRtAttr(unix.FRA_DST, dst))
	}
	req.AddData(nl.NewRtAttr(unix.FRA_PRIORITY, nl.Uint32Attr(uint32(r.priority))))
	if r.table >= 256 {
		req.AddData(nl.NewRtAttr(unix.FRA_TABLE, nl.Uint32Attr(uint32(r.table))))
	}
	req.AddData(nl.NewRtAttr(unix.FRA_IP_PROTO, []byte{r.proto}))
	if r.port != 0 {
		// struct fib_rule_port_range: start and end, host order.
		pr := binary.NativeEndian.AppendUint16(nil, r.port)
		pr = binary.NativeEndian.AppendUint16(pr, r.port)
		req.AddData(nl.NewRtAttr(unix.FRA_DPORT_RANGE, pr))
	}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}
