package incoming

import (
	"context"
	"io"
	"net/netip"
	"sync"
)

// maxTapQueue bounds the bytes a mirror copy may have waiting for its
// client. Past it the copy is given up (its stream closed, the drop
// counted): a slow local app or tunnel must never slow the pod's traffic.
const maxTapQueue = 4 << 20

// tap sends a copy of a connection's bytes (or of its matching requests)
// to a mirroring client. write never blocks; a goroutine opens the
// stream and drains the queue.
type tap struct {
	in       *Service
	sub      *subscription
	src, dst netip.AddrPort

	mu      sync.Mutex
	queue   [][]byte
	queued  int
	broken  bool // given up: the queue overflowed or the stream failed
	closing bool // no more writes: flush, then FIN
	wake    chan struct{}
	done    chan struct{}
}

func newTap(ctx context.Context, in *Service, s *subscription, src, dst netip.AddrPort) *tap {
	tp := &tap{in: in, sub: s, src: src, dst: dst, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
	if tp.queued+len(p) > maxTapQueue {
		tp.giveUpLocked("the mirroring client is too slow")
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

func (tp *tap) giveUpLocked(why string) {
	if tp.broken {
		return
	}
	tp.broken = true
	tp.queue, tp.queued = nil, 0
	n := tp.in.mirrorDrops.Add(1)
	tp.in.log.Warn("mirror copy dropped", "sub", tp.sub.String(), "peer", tp.src.String(), "why", why, "drops_so_far", n)
	tp.signal()
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
	defer close(tp.done)
	st, err := tp.in.open(ctx, tp.sub, tp.src, tp.dst)
	if err != nil {
		tp.mu.Lock()
		tp.giveUpLocked(err.Error())
		tp.mu.Unlock()
		return
	}
	defer st.Close()
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
		tp.queue, tp.queued = nil, 0
		tp.mu.Unlock()
		if broken {
			return
		}
		for _, b := range q {
			if _, err := st.Write(b); err != nil {
				tp.mu.Lock()
				tp.giveUpLocked("write to the mirroring client: " + err.Error())
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
