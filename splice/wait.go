package splice

import (
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// TCPWait waits for a host TCP socket to be readable through Go's
// poller, asking the kernel with a zero-timeout poll(2) (a peeking read
// would consume a pending error such as the peer's reset, which the next
// read must see); nil for other connections (they read into a buffer held
// while they wait).
func TCPWait(c io.Reader) WaitFunc {
	wait := rawWait(c)
	if wait == nil {
		return nil
	}
	// Closing the conn (done) makes the wait return.
	return func(<-chan struct{}) { _ = wait() }
}

// rawWait is TCPWait's wait, returning the error that ended it (the read
// deadline's, or the conn's close); nil for other connections.
func rawWait(c io.Reader) func() error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() error {
		return rc.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
			for {
				n, err := unix.Poll(fds, 0)
				if err == unix.EINTR {
					continue
				}
				// Readable, closed, in error, or poll failed: let the
				// read find out. Nothing yet: park in the poller.
				return err != nil || n > 0
			}
		})
	}
}

// FINOnClose adapts a stream whose Close only ends its sending half (a
// yamux stream: reads go on until the other end closes) to Conn.
func FINOnClose(c io.ReadWriteCloser) Conn { return finOnClose{c} }

type finOnClose struct{ io.ReadWriteCloser }

func (f finOnClose) CloseWrite() error { return f.Close() }

// AsConn is c itself when it can close its sending half alone, else c
// with Close standing in for CloseWrite.
func AsConn(c io.ReadWriteCloser) Conn {
	if hc, ok := c.(Conn); ok {
		return hc
	}
	return finOnClose{c}
}
