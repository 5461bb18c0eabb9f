package mux

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// maxFrame bounds one data frame's body, so one stream's bulk write does
// not hold the connection for long against the others.
const maxFrame = 256 << 10

// Stream is one bidirectional stream of a session. Close half-closes it
// (this end sends no more); it is gone once both ends closed or either
// reset it.
type Stream struct {
	sess *Session
	id   uint32

	writeMu sync.Mutex // one frame sequence at a time, FIN after data

	mu         sync.Mutex
	recv       recvBuffer
	recvWindow uint32 // bytes the peer may still send
	incoming   uint32 // bytes of the data frame being received, not yet in recv
	sendWindow uint32 // bytes this end may still send
	holdsSyn   bool   // opened here, not acknowledged: holds a synSem token
	localFIN   bool
	remoteFIN  bool
	reset      bool
	gone       bool // removed from the session

	sink    Sink  // takes data while a reader waits (SetSink)
	waiting bool  // a Read waits with nothing buffered
	direct  int64 // bytes handed to sink

	readCh  chan struct{} // data, FIN or reset arrived
	writeCh chan struct{} // window grew, or the stream closed or reset
	// onReadable, if set, is called when readCh is: an idle reader (a
	// splice direction) then waits without a goroutine.
	onReadable atomic.Pointer[func()]
	readDL     deadline
	writeDL    deadline
}

func newStream(s *Session, id uint32) *Stream {
	st := &Stream{
		sess:       s,
		id:         id,
		recvWindow: initialWindow,
		sendWindow: initialWindow,
		readCh:     make(chan struct{}, 1),
		writeCh:    make(chan struct{}, 1),
		readDL:     newDeadline(),
		writeDL:    newDeadline(),
	}
	// A passed read deadline makes Read return at once: a reader parked
	// in OnReadable is told, as for data.
	st.readDL.onPass = st.readable
	return st
}

// readable wakes the reader: a blocked Read and the OnReadable callback.
func (s *Stream) readable() {
	notify(s.readCh)
	if fn := s.onReadable.Load(); fn != nil {
		(*fn)()
	}
}

// Readable reports whether a Read would not block now: data, the end of
// the stream, a reset, the session's end or a passed read deadline.
func (s *Stream) Readable() bool {
	s.mu.Lock()
	ready := s.recv.len() > 0 || s.remoteFIN || s.reset
	s.mu.Unlock()
	return ready || s.sess.IsClosed() || isClosed(s.readDL.wait())
}

// OnReadable arranges for fn to be called whenever the stream may have
// become readable (Readable tells), until stop is called: from the
// session's receive loop, so fn must not block. One callback at a time.
func (s *Stream) OnReadable(fn func()) (stop func()) {
	s.onReadable.Store(&fn)
	// The session may have ended before the store, its callbacks gone.
	if s.sess.IsClosed() {
		fn()
	}
	return func() { s.onReadable.CompareAndSwap(&fn, nil) }
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// StreamID is the stream's id on the wire.
func (s *Stream) StreamID() uint32 { return s.id }

// LocalAddr is the session connection's local address.
func (s *Stream) LocalAddr() net.Addr { return s.sess.conn.LocalAddr() }

// RemoteAddr is the session connection's remote address.
func (s *Stream) RemoteAddr() net.Addr { return s.sess.conn.RemoteAddr() }

// SetDeadline sets both the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.readDL.set(t)
	s.writeDL.set(t)
	return nil
}

// SetReadDeadline bounds blocked and future Reads; past it they fail with ErrTimeout.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.readDL.set(t)
	return nil
}

// SetWriteDeadline bounds Writes waiting for the peer's window.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.writeDL.set(t)
	return nil
}

// Read reads received data; io.EOF once the peer closed and all is read.
// Read(nil) waits, as yamux's does, until there is data to read (it then
// returns 0, nil and leaves the data) or the stream ends: a way to wait
// for readiness without holding a buffer.
func (s *Stream) Read(p []byte) (int, error) {
	for {
		s.mu.Lock()
		if s.recv.len() > 0 && len(p) == 0 {
			s.mu.Unlock()
			return 0, nil
		}
		if s.recv.len() > 0 {
			n := s.recv.read(p)
			delta := s.windowGrowthLocked()
			s.mu.Unlock()
			if delta > 0 {
				// The data is ours either way; a failure ends the session,
				// which the next call reports.
				_ = s.sess.writeFrame(header{typ: typeWindowUpdate, streamID: s.id, length: delta}, nil)
			}
			return n, nil
		}
		reset, fin := s.reset, s.remoteFIN
		// Bytes the sink took count as read; the receive loop sends
		// their window update unless its queue was full.
		delta := s.windowGrowthLocked()
		s.waiting = !reset && !fin && delta == 0
		s.mu.Unlock()
		switch {
		case reset:
			return 0, ErrConnectionReset
		case fin:
			return 0, io.EOF
		case s.sess.IsClosed():
			s.stopWaiting()
			return 0, ErrSessionShutdown
		case delta > 0:
			_ = s.sess.writeFrame(header{typ: typeWindowUpdate, streamID: s.id, length: delta}, nil)
			continue
		}
		select {
		case <-s.readCh:
		case <-s.readDL.wait():
			s.stopWaiting()
			return 0, ErrTimeout
		case <-s.sess.closeCh:
		}
		s.stopWaiting()
	}
}

// stopWaiting ends a Read's wait: the sink takes nothing more until the
// reader waits again.
func (s *Stream) stopWaiting() {
	s.mu.Lock()
	s.waiting = false
	s.mu.Unlock()
}

// sinkMaxFrame is the largest data frame given to a Sink: a request or a
// reply. Bulk data goes through the reader's goroutine, so the receive
// loop goes back to reading the connection while that goroutine writes:
// written by the loop itself, one flow's download ran at two thirds of
// the speed (test/bench, remote TCP 1 flow).
const sinkMaxFrame = 4 << 10

// A Sink takes a stream's data straight from the session's receive loop
// (SetSink). TryWrite writes what it can of p at once, without blocking,
// and returns how much it wrote; the rest (all of it after an error) is
// buffered for Read, so the reader meets the error itself.
type Sink interface {
	TryWrite(p []byte) int
}

// SetSink lets the receive loop write the stream's small data frames
// (sinkMaxFrame) to sink itself while a Read waits with nothing buffered:
// the reader's goroutine would only have copied them there, and waking it
// costs more than the copy (a thread woken on another CPU, on a small
// machine the larger part of a round trip). The reader must be a copy
// loop to that same sink: it writes all it read before it reads again, so
// data it did not read cannot pass data it holds. Read(nil) waits too, so
// data may go to the sink without it returning. nil stops it.
func (s *Stream) SetSink(sink Sink) {
	s.mu.Lock()
	s.sink = sink
	s.mu.Unlock()
}

// Direct returns the bytes the sink took, which Read never returned.
func (s *Stream) Direct() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.direct
}

// windowGrowthLocked returns the window update to send after a read, zero
// while less than half the window was consumed, and counts it as sent.
func (s *Stream) windowGrowthLocked() uint32 {
	if s.reset || s.remoteFIN {
		return 0
	}
	window := s.sess.cfg.StreamWindow
	delta := window - s.heldLocked() - s.recvWindow
	if delta < window/2 {
		return 0
	}
	s.recvWindow += delta
	return delta
}

// heldLocked is the window in use: received bytes unread, and those of
// the frame being received. With recvWindow it never exceeds the window.
func (s *Stream) heldLocked() uint32 {
	return uint32(s.recv.len()) + s.incoming
}

// sendWindowUpdate opens (SYN) or accepts (ACK) the stream, advertising
// the configured window beyond the initial one.
func (s *Stream) sendWindowUpdate(flags uint16) error {
	s.mu.Lock()
	delta := s.sess.cfg.StreamWindow - s.heldLocked() - s.recvWindow
	s.recvWindow += delta
	s.mu.Unlock()
	return s.sess.writeFrame(header{typ: typeWindowUpdate, flags: flags, streamID: s.id, length: delta}, nil)
}

// Write sends p, in frames of at most the peer's window.
func (s *Stream) Write(p []byte) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	total := 0
	for len(p) > 0 {
		n, err := s.reserve(len(p))
		if err != nil {
			return total, err
		}
		if err := s.sess.writeFrame(header{typ: typeData, streamID: s.id, length: uint32(n)}, p[:n]); err != nil {
			return total, err
		}
		total += n
		p = p[n:]
	}
	return total, nil
}

// reserve waits for send window and takes up to want bytes of it.
func (s *Stream) reserve(want int) (int, error) {
	for {
		s.mu.Lock()
		var err error
		switch {
		case s.reset:
			err = ErrConnectionReset
		case s.localFIN:
			err = ErrStreamClosed
		case s.sess.IsClosed():
			err = ErrSessionShutdown
		case isClosed(s.writeDL.wait()):
			err = ErrTimeout
		}
		if err != nil {
			s.mu.Unlock()
			return 0, err
		}
		if s.sendWindow > 0 {
			n := min(want, int(s.sendWindow), maxFrame)
			s.sendWindow -= uint32(n)
			s.mu.Unlock()
			return n, nil
		}
		s.mu.Unlock()
		select {
		case <-s.writeCh:
		case <-s.writeDL.wait():
		case <-s.sess.closeCh:
		}
	}
}

// Close half-closes the stream: the peer reads EOF after what was
// written. A Write blocked on the window returns ErrStreamClosed. Reads
// continue until the peer closes too.
func (s *Stream) Close() error {
	s.mu.Lock()
	if s.localFIN || s.reset {
		s.mu.Unlock()
		return nil
	}
	s.localFIN = true
	s.mu.Unlock()
	notify(s.writeCh)

	s.writeMu.Lock()
	err := s.sess.writeFrame(header{typ: typeWindowUpdate, flags: flagFIN, streamID: s.id}, nil)
	s.writeMu.Unlock()

	s.mu.Lock()
	both := s.remoteFIN
	s.mu.Unlock()
	if both {
		s.forget()
	}
	return err
}

// forget removes the stream from the session once, returning its open
// token if it still holds one.
func (s *Stream) forget() {
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return
	}
	s.gone = true
	syn := s.holdsSyn
	s.holdsSyn = false
	s.mu.Unlock()
	if syn {
		<-s.sess.synSem
	}
	s.sess.remove(s.id)
}

// receive applies a data or window-update frame from the receive loop;
// a data frame's body is read from br.
func (s *Stream) receive(h header, br *bufio.Reader) error {
	s.mu.Lock()
	if h.flags&flagACK != 0 && s.holdsSyn {
		s.holdsSyn = false
		<-s.sess.synSem
	}
	switch {
	case h.typ == typeWindowUpdate:
		if uint64(s.sendWindow)+uint64(h.length) > math.MaxUint32 {
			s.mu.Unlock()
			return fmt.Errorf("%w: stream %d: window update %d overflows the send window %d", ErrProtocol, s.id, h.length, s.sendWindow)
		}
		s.sendWindow += h.length
		if h.length > 0 {
			notify(s.writeCh)
		}
	case h.length > 0:
		if s.remoteFIN {
			s.mu.Unlock()
			return fmt.Errorf("%w: stream %d: %d bytes of data after the peer's FIN", ErrProtocol, s.id, h.length)
		}
		if h.length > s.recvWindow {
			s.mu.Unlock()
			return fmt.Errorf("%w: stream %d: data frame of %d bytes, window left %d", ErrProtocol, s.id, h.length, s.recvWindow)
		}
		s.recvWindow -= h.length
		s.incoming = h.length
		s.mu.Unlock()
		if err := s.receiveData(int(h.length), br); err != nil {
			return err
		}
		s.mu.Lock()
	}
	done := false
	if h.flags&flagFIN != 0 {
		if s.remoteFIN {
			s.mu.Unlock()
			return fmt.Errorf("%w: stream %d: second FIN", ErrProtocol, s.id)
		}
		s.remoteFIN = true
		done = s.localFIN
		defer s.readable()
	}
	if h.flags&flagRST != 0 {
		s.reset = true
		s.recv.release()
		done = true
		defer s.readable()
		notify(s.writeCh)
	}
	s.mu.Unlock()
	if done {
		s.forget()
	}
	return nil
}

// receiveData copies n bytes of a data frame from br into the receive
// buffer, as they arrive, waking the reader for each part.
func (s *Stream) receiveData(n int, br *bufio.Reader) error {
	small := n <= sinkMaxFrame
	for n > 0 {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				return fmt.Errorf("read stream %d data: %w", s.id, err)
			}
		}
		part, _ := br.Peek(min(n, br.Buffered()))
		s.mu.Lock()
		took := 0
		if !s.reset {
			if small && s.sink != nil && s.waiting && s.recv.len() == 0 {
				// Under s.mu: the reader cannot start reading meanwhile.
				took = max(0, min(s.sink.TryWrite(part), len(part)))
				s.direct += int64(took)
			}
			s.recv.write(part[took:])
		}
		s.incoming -= uint32(len(part))
		var delta uint32
		if took > 0 {
			delta = s.windowGrowthLocked()
		}
		s.mu.Unlock()
		wake := took < len(part)
		if delta > 0 && !s.sess.queueControl(header{typ: typeWindowUpdate, streamID: s.id, length: delta}) {
			// Woken, the reader sends it.
			s.mu.Lock()
			s.recvWindow -= delta
			s.mu.Unlock()
			wake = true
		}
		if wake {
			s.readable()
		}
		_, _ = br.Discard(len(part))
		n -= len(part)
	}
	return nil
}
