package incoming

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// Mirror of HTTP/2 requests: a copy of each matching request goes to the
// mirroring client's app through an HTTP/2 client connection of its own;
// its body is fed as the original's is read, never holding it up.

// mirror starts a copy of r to each of subs and returns r with a body
// that feeds the copies as the original is read. A copy never slows the
// original: a copy that cannot keep up is dropped.
func (c *h2Conn) mirror(r *http.Request, subs []*subscription) *http.Request {
	var bodies []*mirrorBody
	for _, s := range subs {
		b := c.copyBackend(s)
		cp := r.Clone(c.ctx)
		cp.URL.Scheme, cp.URL.Host, cp.RequestURI = "http", "backend", ""
		body := newMirrorBody(c.in, s, &c.copyQueued)
		cp.Body = body
		if r.Body == nil || r.Body == http.NoBody {
			cp.Body = http.NoBody
			body.closeWrite()
		} else {
			bodies = append(bodies, body)
		}
		go func() {
			res, err := b.tr.RoundTrip(cp)
			if err != nil {
				body.fail("send the copy: " + err.Error())
				return
			}
			// The answer is the mirroring client's app's, and nobody's
			// to hear; read it off so the stream ends cleanly.
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
		}()
	}
	if len(bodies) > 0 {
		r.Body = &teeBody{ReadCloser: r.Body, copies: bodies}
	}
	return r
}

func (c *h2Conn) copyBackend(sub *subscription) *h2Backend {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.copies[sub]; b != nil {
		return b
	}
	b := c.newBackend(sub.label, func(ctx context.Context) (net.Conn, error) {
		return c.in.open(ctx, sub, c.src, c.dst)
	}, nil)
	c.copies[sub] = b
	return b
}

// teeBody is a request body that hands what is read of it to copies.
type teeBody struct {
	io.ReadCloser
	copies []*mirrorBody
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	for _, cp := range t.copies {
		if n > 0 {
			cp.write(p[:n])
		}
		switch {
		case errors.Is(err, io.EOF):
			cp.closeWrite()
		case err != nil:
			cp.fail("the original request failed: " + err.Error())
		}
	}
	return n, err
}

func (t *teeBody) Close() error {
	for _, cp := range t.copies {
		cp.abandon()
	}
	return t.ReadCloser.Close()
}

// mirrorBody is the body of a mirrored request: bytes queued by the
// original's reader, never blocking it, bounded by maxTapQueue for all
// the copies of a connection.
type mirrorBody struct {
	in     *Service
	sub    *subscription
	queued *atomic.Int64 // the connection's copies' bytes, all together

	mu     sync.Mutex
	queue  []byte
	done   bool  // the original body ended
	err    error // the copy was given up
	wake   chan struct{}
	closed bool
}

func newMirrorBody(in *Service, sub *subscription, queued *atomic.Int64) *mirrorBody {
	return &mirrorBody{in: in, sub: sub, queued: queued, wake: make(chan struct{}, 1)}
}

func (b *mirrorBody) write(p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil || b.done || b.closed {
		return
	}
	if b.queued.Add(int64(len(p))) > maxTapQueue {
		b.queued.Add(-int64(len(p)))
		b.failLocked("the mirroring client is too slow")
		return
	}
	b.queue = append(b.queue, p...)
	b.signal()
}

func (b *mirrorBody) closeWrite() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	b.signal()
}

// abandon gives the copy up unless the original body was read whole: a
// copy must not look complete when it is not.
func (b *mirrorBody) abandon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.failLocked("the original request's body was not read whole")
	}
}

func (b *mirrorBody) fail(why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failLocked(why)
}

func (b *mirrorBody) failLocked(why string) {
	if b.err != nil || b.closed {
		return
	}
	b.err = errors.New(why)
	b.queued.Add(-int64(len(b.queue)))
	b.queue = nil
	n := b.in.mirrorDrops.Add(1)
	b.in.log.Warn("mirror copy dropped", "sub", b.sub.String(), "why", why, "drops_so_far", n)
	b.signal()
}

func (b *mirrorBody) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Read is the transport's: it waits for the original's bytes.
func (b *mirrorBody) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		switch {
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			return 0, err
		case len(b.queue) > 0:
			n := copy(p, b.queue)
			b.queue = b.queue[n:]
			b.queued.Add(-int64(n))
			b.mu.Unlock()
			return n, nil
		case b.done:
			b.mu.Unlock()
			return 0, io.EOF
		case b.closed:
			b.mu.Unlock()
			return 0, errors.New("copy closed")
		}
		b.mu.Unlock()
		<-b.wake
	}
}

// Close is the transport's, when it is done with the body.
func (b *mirrorBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.queued.Add(-int64(len(b.queue)))
	b.queue = nil
	b.signal()
	return nil
}
