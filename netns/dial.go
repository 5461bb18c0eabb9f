package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// DialInside connects from inside n with a socket marked RouterMark, so
// that the loopback redirect lets it through: the router uses it to reach
// the app's own listeners on 127.0.0.1 and ::1. network is tcp, tcp4, tcp6,
// udp, udp4 or udp6; address must be a literal IP:port (a name would be
// resolved with the host's files, not the sandbox's).
func DialInside(ctx context.Context, n *Namespace, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return nil, fmt.Errorf("dial inside netns %q: network %q is invalid: want tcp, tcp4, tcp6, udp, udp4 or udp6", n.name, network)
	}
	if _, err := netip.ParseAddrPort(address); err != nil {
		return nil, fmt.Errorf("dial inside netns %q: address %q is invalid: want a literal IP:port such as 127.0.0.1:8080 or [::1]:8080", n.name, address)
	}
	d := net.Dialer{Control: markSocket}
	var conn net.Conn
	// The socket is created by this locked thread, inside n; it stays in n
	// for its whole life wherever it is used later.
	err := n.Do(func() error {
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("dial %s %s inside netns %q: %w", network, address, n.name, err)
	}
	return conn, nil
}

func markSocket(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, RouterMark)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_MARK %#x: %w", RouterMark, serr)
	}
	return nil
}
