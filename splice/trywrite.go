package splice

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// A TryWriter writes what it can of p at once, without blocking, and
// returns how much it wrote (0 on any error, which a blocking write then
// meets).
type TryWriter interface {
	TryWrite(p []byte) int
}

// TCPTryWriter writes to a host TCP socket without waiting: one write(2)
// of what the socket's buffer takes now. It lets a goroutine that must not
// block (a tunnel's receive loop) hand a flow's bytes on itself instead of
// waking the flow's copy goroutine for them.
type TCPTryWriter struct{ rc syscall.RawConn }

// NewTCPTryWriter returns c's TCPTryWriter; nil if c has no descriptor.
func NewTCPTryWriter(c *net.TCPConn) *TCPTryWriter {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	return &TCPTryWriter{rc: rc}
}

// TryWrite writes what the socket takes of p now and returns how much:
// 0 when its buffer is full, or on any error (a closed socket included),
// which the next blocking write then reports.
func (w *TCPTryWriter) TryWrite(p []byte) int {
	n := 0
	// Write calls f once: it returns true, so it never waits.
	_ = w.rc.Write(func(fd uintptr) bool {
		for {
			m, err := unix.Write(int(fd), p)
			if err == unix.EINTR {
				continue
			}
			n = max(m, 0)
			return true
		}
	})
	return n
}
