package client

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

var (
	// ErrTokenRefused is returned when the agent rejects the token.
	ErrTokenRefused = errors.New("agent refused the token")
	// ErrAgentUnavailable is returned by a dial that waited
	// CommunicationTimeout for a tunnel that did not come back. Such an
	// error also wraps syscall.EHOSTUNREACH: to the app, the pod is
	// out of reach.
	ErrAgentUnavailable = errors.New("agent unavailable")
	// ErrNameNotFound is wrapped by a RemoteError of class name-not-found.
	ErrNameNotFound = errors.New("name not found")
	// ErrAgentRetiring is returned by Dial when the agent agreed to leave
	// with its last client and takes no new one: start or join another.
	ErrAgentRetiring = errors.New("the agent is leaving with its last client")
	// ErrClosed is returned by a Client that was closed.
	ErrClosed = errors.New("agent client closed")
)

// RemoteError is a request the agent answered with a failure. It unwraps
// to the error the app would have seen had it run in the pod:
// syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH,
// os.ErrDeadlineExceeded or ErrNameNotFound.
type RemoteError struct {
	Class proto.Class
	// Message is the agent's own error text.
	Message string
}

func (e *RemoteError) Error() string { return "in the pod: " + e.Message }

// Unwrap returns the native error of the class, nil for class other.
func (e *RemoteError) Unwrap() error {
	switch e.Class {
	case proto.ClassRefused:
		return syscall.ECONNREFUSED
	case proto.ClassHostUnreachable:
		return syscall.EHOSTUNREACH
	case proto.ClassNetUnreachable:
		return syscall.ENETUNREACH
	case proto.ClassTimeout:
		return os.ErrDeadlineExceeded
	case proto.ClassNameNotFound:
		return ErrNameNotFound
	}
	return nil
}

// Timeout reports whether the pod-side operation timed out (net.Error).
func (e *RemoteError) Timeout() bool { return e.Class == proto.ClassTimeout }

// Temporary is part of net.Error; nothing the agent reports is.
func (e *RemoteError) Temporary() bool { return false }

// streamError turns what yamux reports on a flow's stream into what a
// socket would report: deadlines as os.ErrDeadlineExceeded, a stream or
// tunnel torn down as ECONNRESET.
func streamError(op, network string, local, remote net.Addr, err error) error {
	var native error
	switch {
	case errors.Is(err, mux.ErrTimeout):
		native = os.ErrDeadlineExceeded
	case errors.Is(err, mux.ErrConnectionReset), errors.Is(err, mux.ErrSessionShutdown),
		errors.Is(err, mux.ErrKeepAliveTimeout), errors.Is(err, mux.ErrProtocol):
		native = &os.SyscallError{Syscall: op, Err: syscall.ECONNRESET}
	case errors.Is(err, mux.ErrStreamClosed):
		native = &os.SyscallError{Syscall: op, Err: syscall.EPIPE}
	default:
		native = err
	}
	return &net.OpError{Op: op, Net: network, Source: local, Addr: remote, Err: native}
}

func resetError(op, network string, local, remote net.Addr, why string) error {
	return &net.OpError{Op: op, Net: network, Source: local, Addr: remote,
		Err: fmt.Errorf("%s: %w", why, &os.SyscallError{Syscall: op, Err: syscall.ECONNRESET})}
}
