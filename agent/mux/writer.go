package mux

import (
	"math"
	"net"
	"runtime"
	"sync"
)

// maxPending bounds the bytes queued for the connection while a writer
// holds it; a writer that finds no room waits, as on a full socket.
const maxPending = 512 << 10

// maxHolderRounds bounds how many queued batches a writer writes for
// others before it hands the rest to a flusher goroutine and returns, so
// a caller's Write is not held hostage by a stream of other writers.
const maxHolderRounds = 2

// maxKeep bounds the buffers kept between writes.
const maxKeep = 1 << 20

// connWriter writes frames to the connection by flat combining: a writer
// that finds the connection free writes its frame itself, in the calling
// goroutine (no hand-off when idle). Writers that arrive while it is busy
// copy their frame into a pending batch and return; the writer holding the
// connection writes the batch, in one call, before it lets go (batching
// when busy). Only when batches keep coming does a flusher goroutine take
// over from it.
type connWriter struct {
	conn     net.Conn
	vectored bool        // conn turns net.Buffers into one writev
	onErr    func(error) // told of a failed write no caller sees

	mu      sync.Mutex
	cond    sync.Cond // room in pending, or the holder let go
	busy    bool      // a writer or the flusher holds the connection
	pending []byte    // frames queued while busy
	spare   []byte    // the last written batch, for reuse
	err     error     // first write error; every later write fails with it

	// Owned by the holder: fields, not locals, since the slices handed to
	// the connection would move locals to the heap on every frame.
	hdr  [headerSize]byte
	bufs [3][]byte
	nb   net.Buffers
	flat []byte
}

func newConnWriter(conn net.Conn, onErr func(error)) *connWriter {
	w := &connWriter{conn: conn, onErr: onErr}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		w.vectored = true
	}
	w.cond.L = &w.mu
	return w
}

// write writes one frame, or queues it behind the current holder's. It
// returns the connection's error if it already failed; a queued frame's
// failure is reported to onErr and to every later write.
func (w *connWriter) write(hdr [headerSize]byte, body []byte) error {
	w.mu.Lock()
	for {
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return err
		}
		if !w.busy {
			break
		}
		if len(w.pending) == 0 || len(w.pending)+headerSize+len(body) <= maxPending {
			w.pending = append(w.pending, hdr[:]...)
			w.pending = append(w.pending, body...)
			w.mu.Unlock()
			return nil
		}
		w.cond.Wait()
	}
	w.busy = true
	w.mu.Unlock()
	// Let goroutines that are ready to write (readers the receive loop
	// just woke, say) queue their frames first, so they leave with ours
	// in one call: free when nothing else is runnable.
	runtime.Gosched()
	w.mu.Lock()
	queued := w.pending
	w.pending = w.spare[:0]
	w.cond.Broadcast() // room
	w.mu.Unlock()
	err := w.writeOne(hdr, body, queued)
	w.mu.Lock()
	w.recycle(queued)
	if err != nil && w.err == nil {
		w.err = err
	}
	w.drainLocked(maxHolderRounds)
	err = w.err
	w.mu.Unlock()
	return err
}

// writeOne writes one frame, then the frames queued behind it, as one
// system call.
func (w *connWriter) writeOne(hdr [headerSize]byte, body, queued []byte) error {
	w.hdr = hdr
	if len(body) == 0 && len(queued) == 0 {
		_, err := w.conn.Write(w.hdr[:])
		return err
	}
	if w.vectored {
		w.bufs = [3][]byte{w.hdr[:], body, queued}
		w.nb = w.bufs[:] // WriteTo consumes its receiver
		_, err := w.nb.WriteTo(w.conn)
		w.bufs, w.nb = [3][]byte{}, nil
		return err
	}
	w.flat = append(append(append(w.flat[:0], hdr[:]...), body...), queued...)
	_, err := w.conn.Write(w.flat)
	if cap(w.flat) > maxKeep {
		w.flat = nil
	}
	return err
}

// drainLocked writes the pending batches, at most rounds of them, then
// lets go of the connection or hands it to a flusher. Called holding
// w.mu with busy set.
func (w *connWriter) drainLocked(rounds int) {
	for round := 0; len(w.pending) > 0 && w.err == nil; round++ {
		if round == rounds {
			go w.flusher()
			return
		}
		out := w.pending
		w.pending = w.spare[:0]
		w.cond.Broadcast() // room
		w.mu.Unlock()
		_, err := w.conn.Write(out)
		w.mu.Lock()
		w.recycle(out)
		if err != nil && w.err == nil {
			w.err = err
		}
	}
	w.busy = false
	w.cond.Broadcast()
}

// recycle keeps a written batch's buffer for the next one.
func (w *connWriter) recycle(b []byte) {
	if cap(b) <= maxKeep {
		w.spare = b[:0]
	} else {
		w.spare = nil
	}
}

// flusher writes what keeps queueing until the queue is empty.
func (w *connWriter) flusher() {
	w.mu.Lock()
	w.drainLocked(math.MaxInt)
	err := w.err
	w.mu.Unlock()
	if err != nil && w.onErr != nil {
		w.onErr(err)
	}
}

// fail makes every later write fail with err and wakes the waiting ones.
func (w *connWriter) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.cond.Broadcast()
	w.mu.Unlock()
}
