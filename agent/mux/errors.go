package mux

import (
	"errors"
	"os"
)

var (
	// ErrSessionShutdown: the session is closed (by Close, the peer, or an error).
	ErrSessionShutdown = errors.New("mux: session shutdown")
	// ErrConnectionReset: the peer reset the stream (or refused to open it).
	ErrConnectionReset = errors.New("mux: stream reset by peer")
	// ErrStreamClosed: Write after this end closed the stream.
	ErrStreamClosed = errors.New("mux: stream closed for writing")
	// ErrRemoteGoAway: the peer said it accepts no more streams.
	ErrRemoteGoAway = errors.New("mux: peer sent go-away, no new streams")
	// ErrStreamsExhausted: this end used up its stream ids.
	ErrStreamsExhausted = errors.New("mux: stream ids exhausted")
	// ErrProtocol: the peer broke the protocol; the session ends.
	ErrProtocol = errors.New("mux: protocol error")
	// ErrKeepAliveTimeout: the peer did not answer a ping in time.
	ErrKeepAliveTimeout = errors.New("mux: keepalive timeout")
	// ErrTimeout: a deadline passed. It is a net.Error whose Timeout is
	// true and it matches os.ErrDeadlineExceeded.
	ErrTimeout error = timeoutError{}
)

type timeoutError struct{}

func (timeoutError) Error() string   { return "mux: i/o deadline reached" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded
}
