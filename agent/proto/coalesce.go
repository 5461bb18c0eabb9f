package proto

import (
	"encoding/binary"
	"net"
)

// yamux's frame header (its spec.md): version, type, flags, stream ID,
// length. A data frame's body of `length` bytes follows its header.
const (
	muxHeaderSize = 12
	muxVersion    = 0
	muxTypeData   = 0
)

// CoalesceFrames returns conn for a yamux session whose data frames each
// leave in one write. yamux's send loop writes a frame's header and its
// body separately: two system calls per frame on TCP, two TLS records or
// two port-forward frames on the other transports. The returned conn
// holds back a data frame's header and sends it with the body that
// follows (writev on sockets, one buffer elsewhere); every other frame
// (window updates, pings, go-away, data without a body) goes at once.
// Only yamux's single send loop may write to it.
func CoalesceFrames(conn net.Conn) net.Conn {
	c := &coalescingConn{Conn: conn}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		c.vectored = true
	}
	return c
}

type coalescingConn struct {
	net.Conn
	vectored bool // the conn takes net.Buffers in one writev
	hdr      [muxHeaderSize]byte
	held     bool
	buf      []byte // header and body joined, for conns without writev
}

// heldBack says whether p is a data frame's header with a body to come.
func heldBack(p []byte) bool {
	return len(p) == muxHeaderSize && p[0] == muxVersion && p[1] == muxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	if !c.held {
		if heldBack(p) {
			copy(c.hdr[:], p)
			c.held = true
			return len(p), nil
		}
		return c.Conn.Write(p)
	}
	c.held = false
	var n int
	var err error
	if c.vectored {
		bufs := net.Buffers{c.hdr[:], p}
		var n64 int64
		n64, err = bufs.WriteTo(c.Conn)
		n = int(n64)
	} else {
		c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
		n, err = c.Conn.Write(c.buf)
		if cap(c.buf) > 1<<20 {
			c.buf = nil // a large body once need not stay allocated
		}
	}
	// The header's bytes were reported written by the call that held it.
	n -= muxHeaderSize
	if n < 0 {
		n = 0
	}
	return n, err
}
