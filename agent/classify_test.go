package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

func TestClassify(t *testing.T) {
	opErr := func(errno error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: errno}}
	}
	cases := []struct {
		err  error
		want proto.Class
	}{
		{nil, proto.ClassOK},
		{opErr(syscall.ECONNREFUSED), proto.ClassRefused},
		{opErr(syscall.EHOSTUNREACH), proto.ClassHostUnreachable},
		{opErr(syscall.ENETUNREACH), proto.ClassNetUnreachable},
		{opErr(syscall.ETIMEDOUT), proto.ClassTimeout},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), proto.ClassTimeout},
		{&net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}, proto.ClassTimeout},
		{&net.DNSError{Name: "nope", IsNotFound: true}, proto.ClassNameNotFound},
		{errors.New("something else"), proto.ClassOther},
	}
	for _, c := range cases {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
