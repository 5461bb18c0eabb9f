package splice

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller is one epoll set, edge-triggered, and the goroutine that waits
// on it for every idle host socket of the process: a parked goroutine per
// socket would cost a stack each.
type poller struct {
	fd   int
	file *os.File // fd, waited for in Go's poller
	mu   sync.Mutex
	next uint64
	fns  map[uint64]func()
}

var thePoller = sync.OnceValues(func() (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// The set is itself readable when it has events, so Go's poller waits
	// for it: a goroutine blocked in epoll_wait would hold a thread and,
	// until the runtime takes it back, a P (with GOMAXPROCS=1 every other
	// goroutine waited for that).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	file := os.NewFile(uintptr(fd), "epoll")
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	p := &poller{fd: fd, file: file, fns: map[uint64]func(){}}
	go p.loop(rc)
	return p, nil
})

func (p *poller) loop(rc syscall.RawConn) {
	events := make([]unix.EpollEvent, 128)
	for {
		var n int
		// Take what is there; park in Go's poller only when nothing is
		// (the set is never closed, so Read never fails).
		_ = rc.Read(func(fd uintptr) bool {
			for {
				var err error
				n, err = unix.EpollWait(int(fd), events, 0)
				if err != unix.EINTR {
					return err == nil && n > 0
				}
			}
		})
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			fn := p.fns[id]
			p.mu.Unlock()
			if fn != nil {
				fn()
			}
		}
	}
}

// TCPNotifier is a Notifier for a host TCP socket, through one epoll set
// for the process; nil if c cannot have one (then Side.Wait is used).
func TCPNotifier(c *net.TCPConn) Notifier {
	p, err := thePoller()
	if err != nil {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	return &tcpNotifier{rc: rc, p: p}
}

type tcpNotifier struct {
	rc syscall.RawConn
	p  *poller
}

func (t *tcpNotifier) Readable() bool {
	readable := true
	// A closed socket (Control fails) is readable: the read reports it.
	_ = t.rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		for {
			n, err := unix.Poll(fds, 0)
			if err == unix.EINTR {
				continue
			}
			readable = err != nil || n > 0
			return
		}
	})
	return readable
}

// Notify adds the socket to the epoll set. The descriptor is used only
// inside Control, where it cannot be closed and reused meanwhile; closing
// the socket takes it out of the set (silently: whoever closes it wakes
// the direction).
func (t *tcpNotifier) Notify(fn func()) (func(), error) {
	p := t.p
	p.mu.Lock()
	p.next++
	id := p.next
	p.fns[id] = fn
	p.mu.Unlock()
	var cerr error
	err := t.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
		cerr = unix.EpollCtl(p.fd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	forget := func() {
		p.mu.Lock()
		delete(p.fns, id)
		p.mu.Unlock()
	}
	if err == nil {
		err = cerr
	}
	if err != nil {
		forget()
		return nil, fmt.Errorf("epoll_ctl add: %w", err)
	}
	return func() {
		_ = t.rc.Control(func(fd uintptr) { _ = unix.EpollCtl(p.fd, unix.EPOLL_CTL_DEL, int(fd), nil) })
		forget()
	}, nil
}
