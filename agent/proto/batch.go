package proto

import (
	"errors"
	"net"
	"sync"
	"time"
)

// MaxBatch bounds the bytes a batching conn holds for the wire: yamux's
// send loop blocks once this much is waiting, as it would on a full socket.
const MaxBatch = 256 << 10

// BatchFrames returns conn for a yamux session whose frames leave in
// batches. yamux's send loop writes each frame (a header, then its body)
// and waits for the write before it takes the next: two system calls per
// frame, two TLS records, and a writer that cannot queue its next frame
// while the kernel takes the last one. The returned conn copies each write
// into a buffer of at most MaxBatch bytes and returns; one flusher
// goroutine writes what has gathered in one call, so that the frames
// queued while one write is under way leave together in the next. A
// write error is returned by every later Write. Close ends the flusher.
func BatchFrames(conn net.Conn) net.Conn {
	b := &batchConn{Conn: conn}
	b.cond.L = &b.mu
	go b.flushLoop()
	return b
}

type batchConn struct {
	net.Conn

	mu      sync.Mutex
	cond    sync.Cond // pending gained bytes, or room, or the end
	pending []byte    // frames written, not yet handed to conn
	writing bool      // the flusher is in a write
	waiting int       // Writes waiting for room
	err     error     // the first write error, or net.ErrClosed
}

// errBatchClosed is what Write returns after Close.
var errBatchClosed = net.ErrClosed

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.err == nil && len(b.pending) > 0 && len(b.pending)+len(p) > MaxBatch {
		b.waiting++
		b.cond.Wait()
		b.waiting--
	}
	if b.err != nil {
		return 0, b.err
	}
	wake := len(b.pending) == 0
	b.pending = append(b.pending, p...)
	if wake {
		b.cond.Broadcast()
	}
	return len(p), nil
}

// flushLoop writes the pending bytes until Close or a write error.
func (b *batchConn) flushLoop() {
	var out []byte
	for {
		b.mu.Lock()
		for b.err == nil && len(b.pending) == 0 {
			b.cond.Wait()
		}
		if b.err != nil {
			b.mu.Unlock()
			return
		}
		// Swap buffers: writers fill the other one meanwhile.
		out, b.pending = b.pending, out[:0]
		b.writing = true
		b.cond.Broadcast() // room for a writer waiting on a full batch
		b.mu.Unlock()

		_, err := b.Conn.Write(out)
		if cap(out) > 2*MaxBatch {
			out = nil // a large write once need not stay allocated
		}
		if err != nil {
			b.fail(err)
			return
		}
		b.mu.Lock()
		b.writing = false
		b.cond.Broadcast() // Close may wait for the last batch
		b.mu.Unlock()
	}
}

func (b *batchConn) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.pending = nil
	b.writing = false
	b.cond.Broadcast()
	b.mu.Unlock()
}

// closeFlushTimeout bounds how long Close waits for the frames written
// before it to leave (a peer that stopped reading).
const closeFlushTimeout = 2 * time.Second

// Close writes out the frames written before it, as a socket's close
// sends what it was given, within closeFlushTimeout; then it closes conn
// and ends the flusher.
func (b *batchConn) Close() error {
	b.mu.Lock()
	if b.err == nil && (len(b.pending) > 0 || b.writing) {
		// The deadline ends a write stuck on a peer that stopped
		// reading; the timer ends the wait on a conn without deadlines
		// (closing it below ends such a write).
		_ = b.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		expired := false
		timer := time.AfterFunc(closeFlushTimeout, func() {
			b.mu.Lock()
			expired = true
			b.cond.Broadcast()
			b.mu.Unlock()
		})
		for !expired && b.err == nil && (len(b.pending) > 0 || b.writing) {
			b.cond.Wait()
		}
		timer.Stop()
	}
	b.mu.Unlock()
	b.fail(errBatchClosed)
	err := b.Conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
