package netns

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// sock_diag (linux/sock_diag.h, linux/inet_diag.h), as `ss -l` asks it.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagReqSize  = 56 // struct inet_diag_req_v2
	inetDiagMsgMin   = 8  // struct inet_diag_msg up to the source port
)

// diagListeningPorts adds the ports of the calling thread's namespace's
// listening TCP sockets and unconnected bound UDP sockets, IPv4 and IPv6,
// to tcp and udp. The kernel filters by state: for LISTEN alone it walks
// only the listening table, where /proc/net/tcp walks every established
// bucket of the host (sized by its memory: ~1 ms for the four tables on a
// 24 GiB machine, every poll, beside the app's traffic).
func diagListeningPorts(tcp, udp map[uint16]bool) error {
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
	if err != nil {
		return fmt.Errorf("sock_diag socket: %w", err)
	}
	defer c.Close()
	for _, q := range []struct {
		proto  uint8
		states uint32
		ports  map[uint16]bool
	}{
		{unix.IPPROTO_TCP, 1 << stateListen, tcp},
		// A UDP server's socket is bound and unconnected: state CLOSE.
		{unix.IPPROTO_UDP, 1 << stateClose, udp},
	} {
		for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			if err := diagDump(c, family, q.proto, q.states, q.ports); err != nil {
				return err
			}
		}
	}
	return nil
}

func diagDump(c *netlink.Conn, family, proto uint8, states uint32, ports map[uint16]bool) error {
	req := make([]byte, inetDiagReqSize)
	req[0], req[1] = family, proto
	binary.NativeEndian.PutUint32(req[4:], states)
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	if err != nil {
		return fmt.Errorf("sock_diag dump (family %d, protocol %d): %w", family, proto, err)
	}
	for _, m := range msgs {
		d := m.Data
		if len(d) < inetDiagMsgMin+4 {
			return fmt.Errorf("sock_diag answer of %d bytes, want at least %d", len(d), inetDiagMsgMin+4)
		}
		// inet_diag_msg: family, state, timer, retrans, then the socket
		// id: source port, destination port (network order), ...
		state := d[1]
		sport := binary.BigEndian.Uint16(d[4:6])
		dport := binary.BigEndian.Uint16(d[6:8])
		if states&(1<<state) == 0 || sport == 0 || (proto == unix.IPPROTO_UDP && dport != 0) {
			continue
		}
		ports[sport] = true
	}
	return nil
}
