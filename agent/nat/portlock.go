package nat

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ErrPortLocked is returned by LockPort for a port another process of the
// network namespace holds.
var ErrPortLocked = errors.New("another process of this network namespace holds the port's redirect lock")

// portLockPrefix names a port's lock: an abstract socket, so that it is
// per network namespace (every agent of one pod sees it), needs no file
// system the agents share (a Job's agent and an ephemeral one have
// different ones), and is let go by the kernel when its holder dies.
const portLockPrefix = "@trafficpolice-port-"

// LockPort takes the lock of port's redirect for the agents of this
// network namespace: binding a name is atomic, so of two agents that
// start redirecting one port at the same instant only one gets it (asking
// the other agents who holds a port, as OtherHolders does, cannot tell
// that apart). unlock lets it go.
func LockPort(port uint16) (unlock func(), err error) {
	ln, err := net.Listen("unix", fmt.Sprintf("%s%d", portLockPrefix, port))
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("port %d: %w", port, ErrPortLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("lock the redirect of port %d: %w", port, err)
	}
	// Nobody connects: the name is the lock. A connection would sit in
	// the backlog, unread; accepting is not worth a goroutine.
	return func() { _ = ln.Close() }, nil
}
