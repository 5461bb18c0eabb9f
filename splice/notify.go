package splice

import (
	"errors"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// A Notifier tells when a connection may have become readable, without
// a goroutine waiting on it.
type Notifier interface {
	// Readable reports whether a read would not block now: data, the end
	// of the stream or an error (which the read then reports).
	Readable() bool
	// Notify arranges for fn to be called whenever the connection may
	// have become readable, until stop is called. fn is called from the
	// notifier's own goroutine and must not block. An error means no
	// notifications will come.
	Notify(fn func()) (stop func(), err error)
}

// States of a notified direction.
const (
	unarmed   int32 = iota // not registered yet: kicks are ignored
	idle                   // parked in the Notifier: no goroutine
	running                // a goroutine copies
	lingering              // the goroutine waits a moment for more (wake)
	finished               // ended; finish was called
)

// linger is how long a copying goroutine waits for more before it parks
// the direction: starting a goroutine per burst of a busy flow costs
// throughput, keeping one per idle flow costs memory.
const linger = 50 * time.Millisecond

// notified is one direction copied by a goroutine started only when its
// source has something to read; it ends when the source would block.
type notified struct {
	n        Notifier
	src      io.Reader
	dst      io.Writer
	total    *int64
	done     <-chan struct{} // nil: only a kick ends a parked direction
	finish   func(err error)
	blocking func() // the fallback when the Notifier cannot register
	state    atomic.Int32
	stop     func()
	wake     chan struct{} // kicks while lingering
}

// arm registers with the Notifier and looks at the source once (it may
// have data already); an error means it could not register.
func (d *notified) arm() error {
	stop, err := d.n.Notify(d.kick)
	if err != nil {
		return err
	}
	d.stop = stop
	d.state.Store(idle)
	d.kick()
	return nil
}

// kick starts the copying goroutine unless one runs (it looks at the
// source again before it parks, so no readiness is lost).
func (d *notified) kick() {
	if d.state.CompareAndSwap(idle, running) {
		go d.run()
		return
	}
	if d.state.Load() == lingering {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// wait waits, lingering, for the source to be readable; false means the
// direction parked and this goroutine must end.
func (d *notified) wait(t **time.Timer) bool {
	d.state.Store(lingering)
	// Readiness that came before the store had its kick ignored.
	if isClosed(d.done) || d.n.Readable() {
		d.state.Store(running)
		return true
	}
	if *t == nil {
		*t = time.NewTimer(linger)
	} else {
		(*t).Reset(linger)
	}
	select {
	case <-d.wake:
		d.state.Store(running)
		return true
	case <-d.done:
		d.state.Store(running)
		return true
	case <-(*t).C:
	}
	d.state.Store(idle)
	// Again: a kick between the timer and the store went nowhere.
	if isClosed(d.done) || d.n.Readable() {
		return d.state.CompareAndSwap(idle, running)
	}
	return false
}

func (d *notified) run() {
	if dl, ok := d.src.(readDeadliner); ok {
		d.runBlocking(dl)
		return
	}
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		// Read only what is there (even after a full buffer: a read that
		// blocks would hold this goroutine through an idle spell). Once
		// done, read anyway: the closed side's read ends the direction.
		if !isClosed(d.done) && !d.n.Readable() {
			if !d.wait(&t) {
				return
			}
			continue // a kick may be stale: look again
		}
		_, nw, rerr, werr := copyOnce(d.dst, d.src, &buffers)
		*d.total += int64(nw)
		var err error
		switch {
		case werr != nil:
			err = &Error{Write: true, Err: werr}
		case rerr != nil && !errors.Is(rerr, io.EOF):
			err = &Error{Err: rerr}
		case rerr == nil:
			continue
		}
		d.state.Store(finished)
		d.stop()
		d.finish(err)
		return
	}
}

// CopyNotified copies src to dst as Copy does, in a goroutine that runs
// only while src has something to read (n tells when), so that an idle
// direction holds none. finish is called once, from that goroutine, with
// the bytes written and Copy's result. Closing src does not always tell n
// (a socket leaves an epoll set silently): whoever closes it calls kick,
// which makes the direction look at src again. An error means n could not
// register; nothing was started.
func CopyNotified(dst io.Writer, src io.Reader, n Notifier, finish func(written int64, err error)) (kick func(), err error) {
	var total int64
	d := &notified{n: n, src: src, dst: dst, total: &total, wake: make(chan struct{}, 1)}
	d.finish = func(err error) { finish(total, err) }
	if err := d.arm(); err != nil {
		return nil, err
	}
	return d.kick, nil
}

// readDeadliner is a source whose reads can give up at a deadline: a
// *net.TCPConn, a gonet.TCPConn.
type readDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// runBlocking copies while the flow is busy with reads that block, so
// that the source's own poller (Go's, the netstack's waiter) wakes this
// goroutine directly: waiting through the Notifier costs two goroutine
// hand-offs per wake, a third of a single flow's throughput. A read
// deadline, moved on every linger while data comes, parks the direction
// once nothing came for a linger. A read that would block borrows only a
// small buffer, or none for a socket (the many flows of a burst each
// linger a moment).
func (d *notified) runBlocking(dl readDeadliner) {
	_ = dl.SetReadDeadline(time.Now().Add(linger))
	moved := false // since the deadline was set
	full := false  // after a full read, read at once into a large buffer
	// A socket is waited for in Go's poller, holding no buffer.
	wait := rawWait(d.src)
	for {
		pool, size := &buffers, BufferSize
		var nr, nw int
		var rerr, werr error
		switch {
		case full || isClosed(d.done):
		case wait != nil:
			// An error other than the deadline's: the read reports it.
			if err := wait(); isDeadline(err) {
				rerr = err
			}
		case !d.n.Readable():
			pool, size = &smallBuffers, SmallBufferSize
		}
		if rerr == nil {
			nr, nw, rerr, werr = copyOnce(d.dst, d.src, pool)
		}
		*d.total += int64(nw)
		full = nr == size
		if nr > 0 {
			moved = true
		}
		var err error
		switch {
		case werr != nil:
			err = &Error{Write: true, Err: werr}
		case rerr == nil:
			continue
		case isDeadline(rerr):
			// Nothing was read (a timed-out read takes nothing).
			if moved {
				moved = false
				_ = dl.SetReadDeadline(time.Now().Add(linger))
				continue
			}
			_ = dl.SetReadDeadline(time.Time{})
			d.state.Store(idle)
			// A kick while this goroutine ran went nowhere: look again.
			if (isClosed(d.done) || d.n.Readable()) && d.state.CompareAndSwap(idle, running) {
				_ = dl.SetReadDeadline(time.Now().Add(linger))
				continue
			}
			return
		case !errors.Is(rerr, io.EOF):
			err = &Error{Err: rerr}
		}
		d.state.Store(finished)
		d.stop()
		d.finish(err)
		return
	}
}

// isDeadline reports whether err is a read deadline's timeout (not a
// socket's own ETIMEDOUT, which ends the direction).
func isDeadline(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var errno syscall.Errno
	var t interface{ Timeout() bool }
	return !errors.As(err, &errno) && errors.As(err, &t) && t.Timeout()
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
