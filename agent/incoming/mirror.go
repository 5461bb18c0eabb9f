package incoming

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"
)

// maxTapQueue bounds the bytes a mirroring client (a subscription) may
// have waiting with the agent, over all its copies. Past it the copy that
// would pass it is given up (its stream closed, the drop counted): a slow
// local app or tunnel must never slow the pod's traffic, nor grow the
// agent with every connection it mirrors.
const maxTapQueue = 4 << 20

// tap sends a copy of a connection's bytes (or of its matching requests)
// to a mirroring client. write never blocks; a goroutine opens the
// stream and drains the queue. Every byte queued, or being written, is
// counted in the subscription's mirrorHeld until it is written.
type tap struct {
	in       *Service
	sub      *subscription
	src, dst netip.AddrPort

	mu      sync.Mutex
	st      *mux.Stream // once open
	queue   [][]byte
	queued  int
	broken  bool // given up: the queue overflowed or the stream failed
	closing bool // no more writes: flush, then FIN
	wake    chan struct{}
	done    chan struct{}
}

func newTap(ctx context.Context, in *Service, s *subscription, src, dst netip.AddrPort) *tap {
	tp := &tap{in: in, sub: s, src: src, dst: dst, wake: make(chan struct{}, 1), done: make(chan struct{})}
	in.mirrorCopies.Add(1)
	go tp.run(ctx)
	return tp
}

// Write queues a copy of p; it always reports success, so that it can
// stand in an io.MultiWriter beside the real destination.
func (tp *tap) Write(p []byte) (int, error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.broken || tp.closing || len(p) == 0 {
		return len(p), nil
	}
	if tp.sub.mirrorHeld.Add(int64(len(p))) > maxTapQueue {
		tp.sub.mirrorHeld.Add(-int64(len(p)))
		tp.giveUpLocked("the mirroring client is too slow: its copies hold the most the agent keeps for it")
		return len(p), nil
	}
	tp.queue = append(tp.queue, append([]byte(nil), p...))
	tp.queued += len(p)
	tp.signal()
	return len(p), nil
}

func (tp *tap) signal() {
	select {
	case tp.wake <- struct{}{}:
	default:
	}
}

// giveUpLocked drops the copy: its queue is freed at once and a write in
// progress is woken to fail, so that run closes the stream and ends.
func (tp *tap) giveUpLocked(why string) {
	if tp.broken {
		return
	}
	tp.broken = true
	tp.dropQueueLocked()
	if tp.st != nil {
		_ = tp.st.SetWriteDeadline(time.Now())
	}
	n := tp.in.mirrorDrops.Add(1)
	tp.in.log.Warn("mirror copy dropped", "sub", tp.sub.String(), "peer", tp.src.String(), "why", why, "drops_so_far", n)
	tp.signal()
}

func (tp *tap) dropQueueLocked() {
	tp.sub.mirrorHeld.Add(-int64(tp.queued))
	tp.queue, tp.queued = nil, 0
}

// usable reports whether the tap still carries copies.
func (tp *tap) usable() bool {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return !tp.broken && !tp.closing
}

// close flushes what is queued and ends the copy; it does not wait.
func (tp *tap) close() {
	tp.mu.Lock()
	tp.closing = true
	tp.mu.Unlock()
	tp.signal()
}

func (tp *tap) run(ctx context.Context) {
	defer tp.in.mirrorCopies.Add(-1)
	defer close(tp.done)
	defer func() {
		// Whatever is left is never sent: later writes are ignored.
		tp.mu.Lock()
		tp.broken = true
		tp.dropQueueLocked()
		tp.mu.Unlock()
	}()
	st, err := tp.in.open(ctx, tp.sub, tp.src, tp.dst)
	if err != nil {
		tp.mu.Lock()
		tp.giveUpLocked(err.Error())
		tp.mu.Unlock()
		return
	}
	// Closed both ways when the copy ends: FIN to the client, and the
	// reader below woken, so that nothing is kept for a client that
	// neither reads nor closes.
	defer func() {
		_ = st.Close()
		_ = st.SetReadDeadline(time.Now())
	}()
	tp.mu.Lock()
	tp.st = st
	tp.mu.Unlock()
	// The client writes nothing back for a mirror; a read ending means
	// the client gave up on this copy.
	go func() {
		_, _ = io.Copy(io.Discard, st)
		tp.mu.Lock()
		if !tp.closing {
			tp.giveUpLocked("the mirroring client closed the copy")
		}
		tp.mu.Unlock()
	}()
	for {
		tp.mu.Lock()
		q, broken, closing := tp.queue, tp.broken, tp.closing
		tp.queue, tp.queued = nil, 0 // still counted in mirrorHeld until written
		tp.mu.Unlock()
		if broken {
			return
		}
		for i, b := range q {
			// A client that takes nothing for mirrorStall has stopped
			// reading this copy. Set under mu: a give-up's deadline wins.
			tp.mu.Lock()
			broken = tp.broken
			if !broken {
				_ = st.SetWriteDeadline(time.Now().Add(tp.in.mirrorStall))
			}
			tp.mu.Unlock()
			var err error
			if !broken {
				_, err = st.Write(b)
			}
			tp.sub.mirrorHeld.Add(-int64(len(b)))
			if broken || err != nil {
				for _, rest := range q[i+1:] {
					tp.sub.mirrorHeld.Add(-int64(len(rest)))
				}
				tp.mu.Lock()
				tp.giveUpLocked(fmt.Sprintf("write to the mirroring client: %v", err))
				tp.mu.Unlock()
				return
			}
		}
		if closing && len(q) == 0 {
			return
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-tp.wake:
		case <-ctx.Done():
			return
		}
	}
}

// teeReader copies what it reads to taps of whole connections.
type teeReader struct {
	r    io.Reader
	taps []*tap
}

func (t *teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		for _, tp := range t.taps {
			_, _ = tp.Write(p[:n])
		}
	}
	return n, err
}
