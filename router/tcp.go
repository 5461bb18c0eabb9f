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
	tcpDialTimeout = 130 * time.Second
	copyBufferSize = 64 << 10
)

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

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
	r.splice(f, in, out)
}

func (r *Router) endFlow(f *flow) {
	f.rec.End = time.Now()
	r.flows.write(&f.rec)
}

// splice copies both ways until both directions end, then closes both.
// Half-closes pass through (the app's shutdown(SHUT_WR) reaches the peer).
func (r *Router) splice(f *flow, in, out net.Conn) {
	r.stats.open.Add(1)
	stop := context.AfterFunc(r.ctx, func() { in.Close(); out.Close() })
	var outBytes, inBytes atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer wg.Done()
		if err := copyHalf(out, in, &outBytes); err != nil {
			firstErr.CompareAndSwap(nil, err)
		}
	}()
	if err := copyHalf(in, out, &inBytes); err != nil {
		firstErr.CompareAndSwap(nil, err)
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
// half-close. A reset on one side resets the other.
func copyHalf(dst, src net.Conn, n *atomic.Int64) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var err error
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n.Add(int64(nw))
			if werr != nil {
				err = werr
				break
			}
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
