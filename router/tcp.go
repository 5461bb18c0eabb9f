package router

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

const (
	// maxPendingDials bounds connection attempts in progress; SYNs beyond it
	// are dropped and retransmitted by the app, as a kernel's full backlog.
	maxPendingDials = 4096
	// tcpDialTimeout is about what Linux takes to give up on an unanswered
	// SYN (tcp_syn_retries=6); the app usually gives up first.
	tcpDialTimeout  = 130 * time.Second
	copyBufferSize  = 64 << 10
	smallBufferSize = 4 << 10
	// timeWait is how long the router's side of a closed flow stays in
	// TIME_WAIT (see newStack).
	timeWait = 100 * time.Millisecond
)

var (
	copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}
	// smallBuffers serve the first read after a pause on a connection we
	// cannot wait on without a buffer (a tunnel stream): an idle flow
	// then holds 4 KiB, not 64.
	smallBuffers = sync.Pool{New: func() any { b := make([]byte, smallBufferSize); return &b }}
)

// handleTCP runs for every new TCP connection from the app: dial first, then
// complete the app's handshake, so the app sees the destination's real
// answer (refused → RST, silence → its own timeout).
func (r *Router) handleTCP(req *tcp.ForwarderRequest) {
	id := req.ID()
	src := netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort)
	dst := r.appDst(id.LocalAddress, id.LocalPort)
	f := r.newFlow(policy.TCP, src, dst)
	r.stats.tcpFlows.Add(1)

	ctx, cancel := context.WithTimeout(r.ctx, tcpDialTimeout)
	out, err := r.dial(ctx, f)
	cancel()
	if err != nil {
		r.stats.failed.Add(1)
		req.Complete(!isTimeout(err))
		f.rec.Error = err.Error()
		r.endFlow(f)
		return
	}
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if terr != nil {
		// The app gave up (or reset) while we dialed.
		req.Complete(true)
		out.Close()
		f.rec.Error = "app side: " + terr.String()
		r.endFlow(f)
		return
	}
	req.Complete(false)
	in := gonet.NewTCPConn(&wq, ep)
	r.splice(f, in, out, endpointWaiter(&wq, ep), connWaiter(out))
}

func (r *Router) endFlow(f *flow) {
	f.rec.End = time.Now()
	r.flows.write(&f.rec)
}

// splice copies both ways until both directions end, then closes both.
// Half-closes pass through (the app's shutdown(SHUT_WR) reaches the peer).
// inWait and outWait, when not nil, wait until a read on in or out would
// not block, so that an idle flow holds no copy buffer.
func (r *Router) splice(f *flow, in, out net.Conn, inWait, outWait readWaiter) {
	r.stats.open.Add(1)
	// done ends both directions' waits: the router stops, or one direction
	// failed (copyHalf closes both ends then).
	done := make(chan struct{})
	var doneOnce sync.Once
	finish := func() { doneOnce.Do(func() { close(done) }) }
	stop := context.AfterFunc(r.ctx, func() { finish(); in.Close(); out.Close() })
	var outBytes, inBytes atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer wg.Done()
		if err := copyHalf(out, in, inWait, done, &outBytes); err != nil {
			firstErr.CompareAndSwap(nil, err)
			finish()
		}
	}()
	if err := copyHalf(in, out, outWait, done, &inBytes); err != nil {
		firstErr.CompareAndSwap(nil, err)
		finish()
	}
	wg.Wait()
	stop()
	in.Close()
	out.Close()
	r.stats.open.Add(-1)
	f.rec.BytesOut, f.rec.BytesIn = outBytes.Load(), inBytes.Load()
	if err, ok := firstErr.Load().(error); ok {
		f.rec.Error = err.Error()
	}
	r.endFlow(f)
}

type closeWriter interface{ CloseWrite() error }

// copyHalf copies src to dst, then passes the end of stream on as a
// half-close. A reset on one side resets the other. With wait, it borrows
// a copy buffer only while src has something to read; without, the read
// that waits uses a small buffer, and a full read switches to the large one.
func copyHalf(dst, src net.Conn, wait readWaiter, done <-chan struct{}, n *atomic.Int64) error {
	var err error
	full := false
	for {
		// After a full buffer more is likely waiting: read at once.
		if wait != nil && !full {
			wait(done)
		}
		pool, size := &copyBuffers, copyBufferSize
		if wait == nil && !full {
			pool, size = &smallBuffers, smallBufferSize
		}
		nr, nw, rerr, werr := copyOnce(dst, src, pool)
		full = nr == size
		n.Add(int64(nw))
		if werr != nil {
			err = werr
			break
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				err = rerr
			}
			break
		}
	}
	if err != nil {
		// Abort both ends: a half-open copy would hang the other direction.
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		dst.Close()
		src.Close()
		return err
	}
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	return nil
}

// copyOnce moves one read's worth from src to dst through a pooled buffer.
func copyOnce(dst, src net.Conn, pool *sync.Pool) (nr, nw int, rerr, werr error) {
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	nr, rerr = src.Read(buf)
	if nr > 0 {
		nw, werr = dst.Write(buf[:nr])
	}
	return nr, nw, rerr, werr
}

// readWaiter returns once a read would not block (data, end of stream or
// an error), or when done is closed.
type readWaiter func(done <-chan struct{})

// endpointWaiter waits on the netstack endpoint's readiness.
func endpointWaiter(wq *waiter.Queue, ep tcpip.Endpoint) readWaiter {
	return func(done <-chan struct{}) {
		if ep.Readiness(waiter.ReadableEvents) != 0 {
			return
		}
		e, ch := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
		wq.EventRegister(&e)
		defer wq.EventUnregister(&e)
		if ep.Readiness(waiter.ReadableEvents) != 0 {
			return
		}
		select {
		case <-ch:
		case <-done:
		}
	}
}

// connWaiter waits for a host TCP socket to be readable by peeking at it
// through Go's poller; nil for other connections (they read into a buffer
// held while they wait).
func connWaiter(c net.Conn) readWaiter {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(<-chan struct{}) {
		// Closing the conn (done) makes rc.Read return.
		rc.Read(func(fd uintptr) bool {
			var b [1]byte
			for {
				_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
				switch err {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false
				}
				return true
			}
		})
	}
}
