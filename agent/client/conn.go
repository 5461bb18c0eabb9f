package client

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/splice"
)

// tcpConn is a TCP flow on a tunnel stream. Besides net.Conn it has
// CloseWrite, a half-close the agent passes on to the pod-side socket.
type tcpConn struct {
	st     *mux.Stream
	t      *tunnel
	remote *net.TCPAddr

	mu        sync.Mutex
	readEOF   bool // the pod's peer finished sending
	wroteEOF  bool // we finished sending (CloseWrite)
	closed    bool
	peerReset bool
	started   bool // the Result is read: the stream carries payload

	closedFlag atomic.Bool // closed, for the fast path of Read and Write
}

// Readable reports whether a Read would not block now (splice's
// Notifier: an idle flow's direction from the pod holds no goroutine).
// A reset or Close passes the stream's read deadline, which the stream
// counts.
func (c *tcpConn) Readable() bool {
	return c.closedFlag.Load() || c.st.Readable()
}

// Notify calls fn whenever the flow may have become readable, from the
// tunnel's receive loop or a passing deadline, until stop is called.
func (c *tcpConn) Notify(fn func()) (stop func(), err error) {
	return c.st.OnReadable(fn), nil
}

// SetSink lets the tunnel's receive loop write the flow's bytes to sink
// while a Read waits (mux.Stream.SetSink); Direct counts them.
func (c *tcpConn) SetSink(sink splice.TryWriter) { c.st.SetSink(sink) }

// Direct returns the bytes written to the sink, which Read never returned.
func (c *tcpConn) Direct() int64 { return c.st.Direct() }

func (c *tcpConn) Read(b []byte) (int, error) {
	if c.closedFlag.Load() {
		return 0, c.opErr("read", net.ErrClosed)
	}
	n, err := c.st.Read(b)
	if err != nil {
		err = c.readError(err)
	}
	return n, err
}

func (c *tcpConn) readError(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return c.opErr("read", net.ErrClosed)
	case c.peerReset:
		return resetError("read", "tcp", c.LocalAddr(), c.remote, "reset by the pod's peer")
	case errors.Is(err, io.EOF):
		// A session torn down also ends its streams with EOF; only a
		// live tunnel's EOF is the peer's FIN.
		if c.t.sess.IsClosed() {
			return resetError("read", "tcp", c.LocalAddr(), c.remote, "tunnel to the agent lost")
		}
		c.readEOF = true
		return io.EOF
	}
	return streamError("read", "tcp", c.LocalAddr(), c.remote, err)
}

func (c *tcpConn) Write(b []byte) (int, error) {
	if c.closedFlag.Load() {
		return 0, c.opErr("write", net.ErrClosed)
	}
	n, err := c.st.Write(b)
	if err != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case c.closed:
			err = c.opErr("write", net.ErrClosed)
		case c.peerReset:
			err = resetError("write", "tcp", c.LocalAddr(), c.remote, "reset by the pod's peer")
		case c.t.sess.IsClosed():
			err = resetError("write", "tcp", c.LocalAddr(), c.remote, "tunnel to the agent lost")
		default:
			err = streamError("write", "tcp", c.LocalAddr(), c.remote, err)
		}
	}
	return n, err
}

// CloseWrite sends FIN: the pod-side socket is shut down for writing once
// the bytes sent before are delivered.
func (c *tcpConn) CloseWrite() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opErr("close", net.ErrClosed)
	}
	c.wroteEOF = true
	c.mu.Unlock()
	_ = c.st.Close()
	return nil
}

// Close ends the flow both ways. Unless both directions had already ended
// cleanly, the agent is told (Abort) to close the pod-side socket.
func (c *tcpConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.closedFlag.Store(true)
	abort := !(c.readEOF && c.wroteEOF) && !c.peerReset
	c.mu.Unlock()
	_ = c.st.Close()
	// Wake a Read or Write blocked on the stream: they report net.ErrClosed.
	_ = c.st.SetDeadline(time.Now())
	c.t.remove(c.st.StreamID())
	if abort {
		c.t.sendAbort(c.st.StreamID())
	}
	return nil
}

// resetByPeer handles the agent's Abort: the pod's peer reset the flow.
func (c *tcpConn) resetByPeer() {
	c.mu.Lock()
	c.peerReset = true
	started := c.started
	c.mu.Unlock()
	if started { // else start does this, not to break reading the Result
		c.wake()
	}
}

// start marks the Result read; a reset that came meanwhile takes effect.
func (c *tcpConn) start() {
	c.mu.Lock()
	c.started = true
	reset := c.peerReset
	c.mu.Unlock()
	if reset {
		c.wake()
	}
}

// wake ends the stream for a reset: blocked and later reads and writes
// fail, and the FIN tells the agent the Abort arrived.
func (c *tcpConn) wake() {
	_ = c.st.SetDeadline(time.Now())
	_ = c.st.Close()
}

func (c *tcpConn) LocalAddr() net.Addr                { return c.t.sess.LocalAddr() }
func (c *tcpConn) RemoteAddr() net.Addr               { return c.remote }
func (c *tcpConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *tcpConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *tcpConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

func (c *tcpConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.remote, Err: err}
}

// udpConn is a UDP flow on a tunnel stream: one Write sends one datagram,
// one Read returns one.
type udpConn struct {
	st     *mux.Stream
	t      *tunnel
	remote *net.UDPAddr

	wmu sync.Mutex

	// A datagram may arrive in pieces and a read deadline may strike
	// between them, so the reader keeps its place across Read calls.
	rmu   sync.Mutex
	hdr   [2]byte
	hdrN  int
	body  []byte // the datagram being read, once its length is known
	bodyN int

	closed atomic.Bool
}

func (c *udpConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for c.hdrN < len(c.hdr) {
		n, err := c.st.Read(c.hdr[c.hdrN:])
		c.hdrN += n
		if err != nil {
			if c.hdrN > 0 && c.hdrN < len(c.hdr) && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, c.readError(err)
		}
		if c.hdrN == len(c.hdr) {
			c.body = make([]byte, binary.BigEndian.Uint16(c.hdr[:]))
			c.bodyN = 0
		}
	}
	for c.bodyN < len(c.body) {
		n, err := c.st.Read(c.body[c.bodyN:])
		c.bodyN += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, c.readError(err)
		}
	}
	// Like a UDP socket: a datagram longer than b is cut to fit.
	n := copy(b, c.body)
	c.hdrN, c.body, c.bodyN = 0, nil, 0
	return n, nil
}

func (c *udpConn) readError(err error) error {
	if c.isClosed() {
		return c.opErr("read", net.ErrClosed)
	}
	if errors.Is(err, io.EOF) {
		if c.t.sess.IsClosed() {
			return resetError("read", "udp", c.LocalAddr(), c.remote, "tunnel to the agent lost")
		}
		return io.EOF // the agent ended the flow (idle)
	}
	return streamError("read", "udp", c.LocalAddr(), c.remote, err)
}

func (c *udpConn) Write(b []byte) (int, error) {
	if len(b) > proto.MaxDatagramSize {
		return 0, c.opErr("write", &os.SyscallError{Syscall: "write", Err: syscall.EMSGSIZE})
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := proto.WriteDatagram(c.st, b); err != nil {
		if c.isClosed() {
			return 0, c.opErr("write", net.ErrClosed)
		}
		// A datagram cut in the middle (a deadline struck while the
		// stream's window was full) would garble every later one: end
		// the flow instead.
		_ = c.Close()
		return 0, streamError("write", "udp", c.LocalAddr(), c.remote, errors.Unwrap(err))
	}
	return len(b), nil
}

// WriteBatch sends datagrams in one stream write, each framed as Write
// frames it: the router passes on what the app queued meanwhile in one
// tunnel write. It returns how many bytes of datagrams went.
func (c *udpConn) WriteBatch(datagrams [][]byte) (int, error) {
	size, total := 0, 0
	for _, d := range datagrams {
		if len(d) > proto.MaxDatagramSize {
			return 0, c.opErr("write", &os.SyscallError{Syscall: "write", Err: syscall.EMSGSIZE})
		}
		size += 2 + len(d)
		total += len(d)
	}
	b := make([]byte, 0, size)
	for _, d := range datagrams {
		b = proto.AppendDatagram(b, d)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.st.Write(b); err != nil {
		if c.isClosed() {
			return 0, c.opErr("write", net.ErrClosed)
		}
		// As in Write: a batch cut in the middle would garble the rest.
		_ = c.Close()
		return 0, streamError("write", "udp", c.LocalAddr(), c.remote, err)
	}
	return total, nil
}

// Close ends the flow; the agent closes its socket when it sees the FIN.
func (c *udpConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	_ = c.st.Close()
	_ = c.st.SetReadDeadline(time.Now())
	return nil
}

func (c *udpConn) isClosed() bool { return c.closed.Load() }

func (c *udpConn) LocalAddr() net.Addr                { return c.t.sess.LocalAddr() }
func (c *udpConn) RemoteAddr() net.Addr               { return c.remote }
func (c *udpConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *udpConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *udpConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

func (c *udpConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.LocalAddr(), Addr: c.remote, Err: err}
}
