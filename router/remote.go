package router

import (
	"context"
	"net"
	"net/netip"
)

// Remote is the router's way into the target pod's network namespace: the
// agent's tunnel client implements it. Errors from the dials wrap the errno
// the app would have seen natively (syscall.ECONNREFUSED, syscall.EHOSTUNREACH,
// syscall.ENETUNREACH, os.ErrDeadlineExceeded for a timeout), so the router
// answers remote and local failures the same way.
type Remote interface {
	// DialTCP opens a TCP connection from the pod to dst. A loopback dst means
	// the pod's own loopback (its sidecars).
	DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// DialUDP opens a UDP flow from the pod to dst. The returned conn keeps
	// datagram boundaries: one Write sends one datagram, one Read returns one.
	DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// Exchange resolves one raw DNS query message with the pod's resolver
	// configuration (/etc/resolv.conf, /etc/hosts) and returns the raw answer.
	Exchange(ctx context.Context, query []byte) ([]byte, error)
}
