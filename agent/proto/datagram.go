package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// MaxDatagramSize is the largest UDP payload a stream can carry.
const MaxDatagramSize = math.MaxUint16

// WriteDatagram writes one UDP datagram on a stream: u16 length, then the
// bytes, in a single Write so that concurrent writers do not interleave.
func WriteDatagram(w io.Writer, p []byte) error {
	if len(p) > MaxDatagramSize {
		return fmt.Errorf("datagram of %d bytes exceeds the maximum of %d", len(p), MaxDatagramSize)
	}
	b := make([]byte, 2+len(p))
	binary.BigEndian.PutUint16(b, uint16(len(p)))
	copy(b[2:], p)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write datagram: %w", err)
	}
	return nil
}

// AppendDatagram appends p framed as WriteDatagram frames it to b; any
// number of them may go in one Write. p must be at most MaxDatagramSize.
func AppendDatagram(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	return append(b, p...)
}

// ReadDatagram reads one datagram from a stream into p and returns its
// length. Like a UDP socket, it truncates a datagram longer than p (the
// rest is discarded) and then reports n == len(p) with ErrTruncated.
// It returns io.EOF only at a datagram boundary.
func ReadDatagram(r io.Reader, p []byte) (int, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("read datagram length: %w", err)
		}
		return 0, err
	}
	size := int(binary.BigEndian.Uint16(hdr[:]))
	n := min(size, len(p))
	if _, err := io.ReadFull(r, p[:n]); err != nil {
		return 0, fmt.Errorf("read datagram of %d bytes: %w", size, noEOF(err))
	}
	if n < size {
		if _, err := io.CopyN(io.Discard, r, int64(size-n)); err != nil {
			return 0, fmt.Errorf("skip the rest of a datagram of %d bytes: %w", size, noEOF(err))
		}
		return n, ErrTruncated
	}
	return n, nil
}

// ErrTruncated reports a datagram longer than the reader's buffer.
var ErrTruncated = errors.New("datagram truncated: buffer too small")

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
