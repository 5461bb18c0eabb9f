package mux

import (
	"encoding/binary"
	"fmt"
)

// headerSize is the fixed size of a frame header: version, type, flags,
// stream id, length (spec.md "Framing").
const headerSize = 12

// protoVersion is the only version yamux defines.
const protoVersion = 0

// frameType is a frame's message type.
type frameType uint8

const (
	typeData         frameType = 0 // length bytes of stream data follow
	typeWindowUpdate frameType = 1 // length is a window increment
	typePing         frameType = 2 // length is an opaque value echoed back
	typeGoAway       frameType = 3 // length is a termination code
)

func (t frameType) String() string {
	switch t {
	case typeData:
		return "data"
	case typeWindowUpdate:
		return "window-update"
	case typePing:
		return "ping"
	case typeGoAway:
		return "go-away"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Frame flags.
const (
	flagSYN uint16 = 1 << 0 // opens a stream; a ping request
	flagACK uint16 = 1 << 1 // accepts a stream; a ping answer
	flagFIN uint16 = 1 << 2 // half-close: the sender sends no more data
	flagRST uint16 = 1 << 3 // reset the stream at once
)

// Go-away codes.
const (
	goAwayNormal   uint32 = 0
	goAwayProtocol uint32 = 1
	goAwayInternal uint32 = 2
)

// initialWindow is the receive window both ends assume for a new stream
// before any window update.
const initialWindow = 256 << 10

// header is one decoded frame header.
type header struct {
	typ      frameType
	flags    uint16
	streamID uint32
	length   uint32
}

func (h header) String() string {
	return fmt.Sprintf("%s flags=%#x stream=%d length=%d", h.typ, h.flags, h.streamID, h.length)
}

// encode returns h in wire form.
func (h header) encode() [headerSize]byte {
	var b [headerSize]byte
	b[0] = protoVersion
	b[1] = byte(h.typ)
	binary.BigEndian.PutUint16(b[2:4], h.flags)
	binary.BigEndian.PutUint32(b[4:8], h.streamID)
	binary.BigEndian.PutUint32(b[8:12], h.length)
	return b
}

// parseHeader decodes a header, rejecting an unknown version or type.
// The checks that need session state (stream ids, windows) are the
// session's.
func parseHeader(b [headerSize]byte) (header, error) {
	if b[0] != protoVersion {
		return header{}, fmt.Errorf("%w: frame version %d, only %d is defined", ErrProtocol, b[0], protoVersion)
	}
	h := header{
		typ:      frameType(b[1]),
		flags:    binary.BigEndian.Uint16(b[2:4]),
		streamID: binary.BigEndian.Uint32(b[4:8]),
		length:   binary.BigEndian.Uint32(b[8:12]),
	}
	if h.typ > typeGoAway {
		return header{}, fmt.Errorf("%w: frame type %d, valid are 0 (data) to 3 (go-away)", ErrProtocol, b[1])
	}
	return h, nil
}
