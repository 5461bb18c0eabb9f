package agent

import (
	"context"
	"errors"
	"net"
	"syscall"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// classify maps a pod-side error to the class the client turns back into
// the errno the app would have seen.
func classify(err error) proto.Class {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case err == nil:
		return proto.ClassOK
	case errors.Is(err, syscall.ECONNREFUSED):
		return proto.ClassRefused
	case errors.Is(err, syscall.EHOSTUNREACH):
		return proto.ClassHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return proto.ClassNetUnreachable
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded):
		return proto.ClassTimeout
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return proto.ClassNameNotFound
	case errors.As(err, &netErr) && netErr.Timeout():
		return proto.ClassTimeout
	}
	return proto.ClassOther
}

func failure(err error) proto.Result {
	return proto.Result{Class: classify(err), Message: err.Error()}
}
