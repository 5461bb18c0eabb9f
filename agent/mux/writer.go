package mux

import (
	"net"
	"sync"
)

// frame is one frame waiting to be written: its header and body (the
// caller's bytes; the caller waits until the frame is written, so they are
// not copied).
type frame struct {
	hdr  [headerSize]byte
	body []byte
}

// maxHolderRounds bounds how many batches one writer writes for others
// before it returns; waiting writers take over what is left.
const maxHolderRounds = 4

// maxFlatKeep bounds the copy buffer a non-vectored conn keeps between
// writes.
const maxFlatKeep = 1 << 20

// connWriter writes frames to the connection by flat combining: a writer
// that finds the connection free writes its frame itself, in the calling
// goroutine; writers that arrive meanwhile queue their frame and wait, and
// the writer holding the connection writes everything queued in one
// vectored write before it lets go. No goroutine hand-off when idle,
// batching when busy.
type connWriter struct {
	conn     net.Conn
	vectored bool // conn turns net.Buffers into one writev

	mu      sync.Mutex
	cond    sync.Cond // a batch was written, or the holder let go
	busy    bool      // a writer holds the connection
	pending []frame   // the batch being gathered
	spare   []frame   // the last written batch, for reuse
	gen     uint64    // number of the batch being gathered
	done    uint64    // number of the last batch written
	err     error     // first write error; every later write fails with it

	// Owned by the holder.
	bufs net.Buffers
	flat []byte
}

func newConnWriter(conn net.Conn) *connWriter {
	w := &connWriter{conn: conn, gen: 1}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		w.vectored = true
	}
	w.cond.L = &w.mu
	return w
}

// write writes one frame and returns once it is on the connection (or
// the connection failed).
func (w *connWriter) write(hdr [headerSize]byte, body []byte) error {
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.pending = append(w.pending, frame{hdr: hdr, body: body})
	mine := w.gen
	for {
		if w.done >= mine {
			w.mu.Unlock()
			return nil
		}
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return err
		}
		if !w.busy {
			w.hold(mine)
			continue
		}
		w.cond.Wait()
	}
}

// hold writes the queued batches, at least up to batch mine, with w.mu
// held on entry and exit (released while writing).
func (w *connWriter) hold(mine uint64) {
	w.busy = true
	for round := 0; ; round++ {
		batch, n := w.pending, w.gen
		w.pending, w.gen = w.spare[:0], w.gen+1
		w.mu.Unlock()
		err := w.flush(batch)
		w.mu.Lock()
		clear(batch) // drop references to callers' bytes
		w.spare = batch[:0]
		if err != nil {
			w.err = err
			break
		}
		w.done = n
		if len(w.pending) == 0 || (n >= mine && round+1 >= maxHolderRounds) {
			break
		}
	}
	w.busy = false
	w.cond.Broadcast()
}

// flush writes one batch in one call.
func (w *connWriter) flush(batch []frame) error {
	if w.vectored {
		w.bufs = w.bufs[:0]
		for i := range batch {
			w.bufs = append(w.bufs, batch[i].hdr[:])
			if len(batch[i].body) > 0 {
				w.bufs = append(w.bufs, batch[i].body)
			}
		}
		bufs := w.bufs // WriteTo consumes its receiver
		_, err := bufs.WriteTo(w.conn)
		clear(w.bufs)
		return err
	}
	w.flat = w.flat[:0]
	for i := range batch {
		w.flat = append(w.flat, batch[i].hdr[:]...)
		w.flat = append(w.flat, batch[i].body...)
	}
	_, err := w.conn.Write(w.flat)
	if cap(w.flat) > maxFlatKeep {
		w.flat = nil
	}
	return err
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
