package synqueue

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// File returns a duplicate of the queue's socket, already bound and
// configured, for FromFile in another process. A rootless run needs it:
// only a process inside the sandbox's user namespace may bind a queue there
// (nfnetlink checks the credentials the socket was opened with), and the
// router is not one. The queue stays bound while either copy is open.
func (q *Queue) File() (*os.File, error) {
	rc, err := q.conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("synqueue: queue %d in %s: %w", q.num, q.where, err)
	}
	var dup int
	var derr error
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("synqueue: queue %d in %s: %w", q.num, q.where, err)
	}
	if derr != nil {
		return nil, fmt.Errorf("synqueue: queue %d in %s: duplicate its socket: %w", q.num, q.where, derr)
	}
	return os.NewFile(uintptr(dup), "synqueue"), nil
}

// FromFile is the Queue whose socket File passed on (f, which it takes):
// queue num, bound and configured by Open elsewhere; where names its
// namespace in errors.
func FromFile(f *os.File, num uint16, where string) (*Queue, error) {
	defer f.Close() // FileConn keeps a duplicate
	sc, err := socket.FileConn(f, "synqueue")
	if err != nil {
		return nil, fmt.Errorf("synqueue: queue %d in %s: %w", num, where, err)
	}
	sa, err := sc.Getsockname()
	nl, ok := sa.(*unix.SockaddrNetlink)
	if err != nil || !ok {
		sc.Close()
		return nil, fmt.Errorf("synqueue: queue %d in %s: not a netlink socket (%T): %v", num, where, sa, err)
	}
	conn := netlink.NewConn(&fileSocket{sc}, nl.Pid)
	return &Queue{conn: conn, num: num, where: where, held: map[uint32]struct{}{}}, nil
}

// fileSocket is netlink's Socket over a descriptor another process opened
// (netlink.Dial only opens its own).
type fileSocket struct{ c *socket.Conn }

var kernel = &unix.SockaddrNetlink{Family: unix.AF_NETLINK}

func (s *fileSocket) Close() error { return s.c.Close() }

func (s *fileSocket) Send(m netlink.Message) error {
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = s.c.Sendmsg(context.Background(), b, nil, kernel, 0)
	return err
}

func (s *fileSocket) SendMessages(ms []netlink.Message) error {
	var all []byte
	for _, m := range ms {
		b, err := m.MarshalBinary()
		if err != nil {
			return err
		}
		all = append(all, b...)
	}
	_, err := s.c.Sendmsg(context.Background(), all, nil, kernel, 0)
	return err
}

// Receive reads one datagram of messages, however long: MSG_TRUNC on a
// peek says its length first.
func (s *fileSocket) Receive() ([]netlink.Message, error) {
	n, _, _, _, err := s.c.Recvmsg(context.Background(), nil, nil, unix.MSG_PEEK|unix.MSG_TRUNC)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	n, _, _, _, err = s.c.Recvmsg(context.Background(), b, nil, 0)
	if err != nil {
		return nil, err
	}
	raw, err := syscall.ParseNetlinkMessage(b[:n])
	if err != nil {
		return nil, err
	}
	ms := make([]netlink.Message, 0, len(raw))
	for _, r := range raw {
		ms = append(ms, netlink.Message{
			Header: netlink.Header{Length: r.Header.Len, Type: netlink.HeaderType(r.Header.Type),
				Flags: netlink.HeaderFlags(r.Header.Flags), Sequence: r.Header.Seq, PID: r.Header.Pid},
			Data: r.Data,
		})
	}
	return ms, nil
}

func (s *fileSocket) SetDeadline(t time.Time) error      { return s.c.SetDeadline(t) }
func (s *fileSocket) SetReadDeadline(t time.Time) error  { return s.c.SetReadDeadline(t) }
func (s *fileSocket) SetWriteDeadline(t time.Time) error { return s.c.SetWriteDeadline(t) }

func (s *fileSocket) SyscallConn() (syscall.RawConn, error) { return s.c.SyscallConn() }
