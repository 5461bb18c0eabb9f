// Package splice copies a byte stream both ways between two connections,
// passing half-closes on: the end of one side's stream becomes a
// CloseWrite on the other, and a failure on either side resets both. It is
// the one copy loop of trafficpolice: the router between the app and a
// local or remote peer, the agent between a stream and a pod-side socket,
// the client between a stolen connection and the app.
//
// An idle flow holds no copy buffer when its reads can be waited on
// (Side.Wait, or a *net.TCPConn, whose readiness is peeked through Go's
// poller); otherwise the read that waits borrows a small buffer, and a
// full read switches to the large one.
package splice

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// Buffer sizes: a bulk transfer moves in large reads; an idle flow that
// cannot wait without a buffer holds only a small one.
const (
	BufferSize      = 64 << 10
	SmallBufferSize = 4 << 10
)

var (
	buffers      = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}
	smallBuffers = sync.Pool{New: func() any { b := make([]byte, SmallBufferSize); return &b }}
)

// Conn is one side of a splice: a byte stream whose sending half can be
// closed alone.
type Conn interface {
	io.Reader
	io.Writer
	// CloseWrite ends the sending half; reads go on.
	CloseWrite() error
	Close() error
}

// Aborter is a Conn that can be reset rather than closed cleanly, so that
// its peer does not take a broken exchange for a complete one. A
// *net.TCPConn is reset with SO_LINGER 0 without implementing it.
type Aborter interface {
	Abort()
}

// A WaitFunc returns once a read would not block (data, end of stream or
// an error), or when done is closed.
type WaitFunc func(done <-chan struct{})

// Side is one end of Both.
type Side struct {
	Conn Conn
	// Reader, if set, is read instead of Conn: Conn's stream with bytes
	// already read from it put back in front.
	Reader io.Reader
	// Wait waits until Conn is readable; nil means TCPWait's for a
	// *net.TCPConn, else none.
	Wait WaitFunc
	// Notifier, if set (and Reader is not), tells when Conn may have
	// become readable, so that the direction reading it holds no
	// goroutine while it idles (Start); Wait is then the fallback.
	Notifier Notifier
}

func (s Side) reader() io.Reader {
	if s.Reader != nil {
		return s.Reader
	}
	return s.Conn
}

func (s Side) wait() WaitFunc {
	if s.Wait != nil {
		return s.Wait
	}
	// A socket can be waited on unless bytes already read from it come
	// first.
	if tc, ok := s.Conn.(*net.TCPConn); ok && (s.Reader == nil || s.Reader == io.Reader(tc)) {
		return TCPWait(tc)
	}
	return nil
}

// Result is what Both copied and why it stopped early, if it did.
type Result struct {
	// AToB and BToA count the bytes written each way.
	AToB, BToA int64
	// Err is the first failure (nil when both directions reached their
	// end of stream).
	Err error
}

// Both copies a→b and b→a until both directions end, then closes both.
// The end of one direction is passed on as a half-close; an error in
// either direction resets both sides at once (a half-open copy would hang
// the other direction). ctx ending closes both sides too.
func Both(ctx context.Context, a, b Side) Result {
	ch := make(chan Result, 1)
	// The caller waits anyway: it copies one direction itself.
	if inline := start(ctx, a, b, func(r Result) { ch <- r }); inline != nil {
		inline()
	}
	return <-ch
}

// Start is Both without waiting: it returns at once and calls done with
// the Result once both directions have ended and both sides are closed.
// A direction whose source has a Notifier holds no goroutine while it
// idles, so a flow idle both ways costs no goroutine at all.
func Start(ctx context.Context, a, b Side, done func(Result)) {
	if inline := start(ctx, a, b, done); inline != nil {
		go inline()
	}
}

// start sets both directions going and returns one that still needs a
// goroutine to block in (nil if none does).
func start(ctx context.Context, a, b Side, done func(Result)) (inline func()) {
	// quit ends the waiting reads: ctx is over, or a direction failed.
	ctx, quit := context.WithCancel(ctx)
	f := &both{a: a, b: b, quit: quit, done: done}
	f.left.Store(2)
	ab := f.direction(ctx, a, b.Conn, &f.res.AToB)
	ba := f.direction(ctx, b, a.Conn, &f.res.BToA)
	f.stop = context.AfterFunc(ctx, func() {
		_ = a.Conn.Close()
		_ = b.Conn.Close()
		// A direction parked in its Notifier learns of the close here
		// (closing a socket removes it from an epoll set silently).
		f.kick()
	})
	var runs []func()
	for _, run := range []func(){ab, ba} {
		if run != nil {
			runs = append(runs, run)
		}
	}
	// Armed only now: a notified direction may finish at once, and
	// finish needs f.stop.
	for _, d := range f.notified {
		if d.arm() != nil {
			runs = append(runs, d.blocking)
		}
	}
	for i, run := range runs {
		if i == 0 {
			inline = run
		} else {
			go run()
		}
	}
	return inline
}

// both is one Start's state.
type both struct {
	a, b     Side
	res      Result
	once     sync.Once
	left     atomic.Int32
	quit     context.CancelFunc
	stop     func() bool
	done     func(Result)
	notified []*notified
}

// direction prepares copying src to dst: parked in src's Notifier if it
// has one (added to f.notified, armed later; nil returned), else the
// blocking loop returned for a goroutine.
func (f *both) direction(ctx context.Context, src Side, dst Conn, n *int64) func() {
	blocking := func() {
		nw, err := Copy(dst, src.reader(), src.wait(), ctx.Done())
		*n = nw
		f.finish(dst, err)
	}
	if src.Notifier != nil && src.Reader == nil {
		f.notified = append(f.notified, &notified{n: src.Notifier, src: src.Conn, dst: dst, total: n,
			done: ctx.Done(), finish: func(err error) { f.finish(dst, err) }, blocking: blocking, wake: make(chan struct{}, 1)})
		return nil
	}
	return blocking
}

// kick wakes the directions parked in a Notifier.
func (f *both) kick() {
	for _, d := range f.notified {
		d.kick()
	}
}

// finish ends one direction: its end of stream becomes dst's half-close,
// a failure resets both sides; the last one closes both and reports.
func (f *both) finish(dst Conn, err error) {
	if err == nil {
		err = closeWrite(dst)
	}
	if err != nil {
		f.once.Do(func() {
			f.res.Err = err
			Abort(f.a.Conn)
			Abort(f.b.Conn)
			f.quit()
		})
	}
	if f.left.Add(-1) > 0 {
		return
	}
	f.stop()
	f.quit()
	_ = f.a.Conn.Close()
	_ = f.b.Conn.Close()
	f.done(f.res)
}

// Error says which side of a Copy failed.
type Error struct {
	// Write is true when writing to dst failed, false when reading src did.
	Write bool
	Err   error
}

func (e *Error) Error() string { return e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// IsWrite reports whether err is a Copy's failure to write.
func IsWrite(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Write
}

// Copy copies src to dst until src's end of stream (nil) or a failure (an
// *Error), and returns the bytes written. It does not close anything.
// With wait, it borrows a copy buffer only once src has something to read;
// without, the read that waits uses a small buffer, and a full read
// switches to the large one.
func Copy(dst io.Writer, src io.Reader, wait WaitFunc, done <-chan struct{}) (int64, error) {
	var total int64
	full := false
	for {
		// After a full buffer more is likely waiting: read at once.
		if wait != nil && !full {
			wait(done)
		}
		pool, size := &buffers, BufferSize
		if wait == nil && !full {
			pool, size = &smallBuffers, SmallBufferSize
		}
		nr, nw, rerr, werr := copyOnce(dst, src, pool)
		full = nr == size
		total += int64(nw)
		if werr != nil {
			return total, &Error{Write: true, Err: werr}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return total, nil
			}
			return total, &Error{Err: rerr}
		}
	}
}

// copyOnce moves one read's worth from src to dst through a pooled buffer.
func copyOnce(dst io.Writer, src io.Reader, pool *sync.Pool) (nr, nw int, rerr, werr error) {
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	nr, rerr = src.Read(buf)
	if nr > 0 {
		nw, werr = dst.Write(buf[:nr])
	}
	return nr, nw, rerr, werr
}

// closeWrite passes the end of stream on; a side already closed is not a
// failure of the copy.
func closeWrite(c Conn) error {
	if err := c.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ENOTCONN) {
		return &Error{Write: true, Err: err}
	}
	return nil
}

// Abort resets c: Abort() for an Aborter, SO_LINGER 0 then Close for a
// *net.TCPConn (the peer sees RST), Close otherwise.
func Abort(c Conn) {
	switch c := c.(type) {
	case Aborter:
		c.Abort()
	case *net.TCPConn:
		_ = c.SetLinger(0)
		_ = c.Close()
	default:
		_ = c.Close()
	}
}
