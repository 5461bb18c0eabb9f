package router

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/splice"
)

const (
	// maxPendingDials bounds connection attempts in progress in all; SYNs
	// beyond it are dropped and retransmitted by the app, as a kernel's full
	// backlog. Each costs a goroutine and a socket (or a tunnel stream)
	// until its dial ends.
	maxPendingDials = 16384
	// maxPendingPerDst bounds them per destination address, so that a
	// destination that drops SYNs (each dial waits out tcpDialTimeout)
	// cannot take the slots every other new connection needs: it takes
	// maxPendingDials/maxPendingPerDst silent addresses to fill them. A
	// destination that answers holds a dial for one round trip, so the
	// bound is far above what a busy one needs at once.
	maxPendingPerDst = 512
	// tcpDialTimeout is about what Linux takes to give up on an unanswered
	// SYN (tcp_syn_retries=6); the app usually gives up first.
	tcpDialTimeout = 130 * time.Second
	// timeWait is how long the router's side of a closed flow stays in
	// TIME_WAIT (see newStack).
	timeWait = 100 * time.Millisecond
)

// keepAliveAfter is how long a flow lives before its host socket gets TCP
// keepalive (splice.KeepAliveLater). A variable for the tests.
var keepAliveAfter = splice.KeepAliveDelay

// handleTCP runs for every new TCP connection from the app: dial first, then
// complete the app's handshake, so the app sees the destination's real
// answer (refused → RST, silence → its own timeout).
func (r *Router) handleTCP(req *tcp.ForwarderRequest) {
	if !r.track() {
		req.Complete(true)
		return
	}
	spliced := false
	defer func() {
		if !spliced { // else the splice's end is the flow's
			r.wg.Done()
		}
	}()
	id := req.ID()
	src := netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort)
	dst := r.appDst(id.LocalAddress, id.LocalPort)
	f, out, err := r.dialTCP(src, dst, "")
	if f == nil {
		req.Complete(false) // as a full backlog: no answer, the app retransmits its SYN
		return
	}
	if err != nil {
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
	spliced = true
	r.spliceTCP(f, gonet.NewTCPConn(&wq, ep), out, &endpointSink{ep: ep},
		endpointWaiter(&wq, ep), &endpointNotifier{wq: &wq, ep: ep}, r.wg.Done)
}

// spliceTCP starts copying a TCP flow whose app side in is connected: a
// host socket out gets keepalive once the flow has lasted, and a tunnel
// stream's receive loop writes the pod's small frames into sink itself
// while the copy from out waits (mux.Stream.SetSink). done runs when the
// flow has ended.
func (r *Router) spliceTCP(f *flow, in, out net.Conn, sink splice.TryWriter, inWait splice.WaitFunc, inNotify splice.Notifier, done func()) {
	ended := done
	if tc, ok := out.(*net.TCPConn); ok {
		keepAlive := splice.KeepAliveLater(tc, keepAliveAfter)
		ended = func() {
			keepAlive.Stop()
			done()
		}
	}
	if s, ok := out.(sinkSetter); ok {
		s.SetSink(sink)
	}
	r.splice(f, in, out, inWait, splice.TCPWait(out), inNotify, tcpNotifier(out), ended)
}

// dialTCP is the dial-first half of a new TCP connection from the app:
// it decides the flow (its record's Via says how the app's side is taken)
// and dials. A nil flow means dst has no pending place left (a destination
// that answers none of its pending dials): the caller drops the SYN as a
// full backlog would, and the app retransmits it.
func (r *Router) dialTCP(src, dst netip.AddrPort, via string) (*flow, net.Conn, error) {
	if !r.pending.add(dst.Addr()) {
		r.stats.synsDropped.Add(1)
		r.warnOnceFor("pending "+dst.Addr().String(), "dropping new connections to a destination that answers none of its pending ones",
			"dst", dst.Addr().String(), "pending", maxPendingPerDst)
		return nil, nil, nil
	}
	defer r.pending.done(dst.Addr())
	f := r.newFlow(policy.TCP, src, dst)
	f.rec.Via = via
	r.stats.tcpFlows.Add(1)
	ctx, cancel := context.WithTimeout(r.ctx, tcpDialTimeout)
	defer cancel()
	out, err := r.dial(ctx, f)
	if err != nil {
		r.stats.failed.Add(1)
	}
	return f, out, err
}

// tcpNotifier is splice's Notifier for the flow's outer connection: a
// host TCP socket's, or the tunnel stream's own (the remote path); nil if
// it has none.
func tcpNotifier(c net.Conn) splice.Notifier {
	switch c := c.(type) {
	case *net.TCPConn:
		return splice.TCPNotifier(c)
	case splice.Notifier:
		return c
	}
	return nil
}

// pendingDials counts the dials in progress per destination address.
type pendingDials struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

// add takes a place for a dial to dst; false means dst has its
// maxPendingPerDst already.
func (p *pendingDials) add(dst netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[dst] >= maxPendingPerDst {
		return false
	}
	if p.n == nil {
		p.n = map[netip.Addr]int{}
	}
	p.n[dst]++
	return true
}

// done gives the place back once the dial has ended.
func (p *pendingDials) done(dst netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[dst] <= 1 {
		delete(p.n, dst)
		return
	}
	p.n[dst]--
}

func (r *Router) endFlow(f *flow) {
	f.rec.End = time.Now()
	r.flows.write(&f.rec)
}

// splice starts copying both ways until both directions end, then closes
// both, records the flow and calls ended. Half-closes pass through (the
// app's shutdown(SHUT_WR) reaches the peer). inWait and outWait, when not
// nil, wait until a read on in or out would not block, so that an idle
// flow holds no copy buffer; inNotify and outNotify, when not nil, let a
// direction idle without a goroutine.
func (r *Router) splice(f *flow, in, out net.Conn, inWait, outWait splice.WaitFunc, inNotify, outNotify splice.Notifier, ended func()) {
	r.stats.open.Add(1)
	splice.Start(r.ctx,
		splice.Side{Conn: splice.AsConn(in), Wait: inWait, Notifier: inNotify},
		splice.Side{Conn: splice.AsConn(out), Wait: outWait, Notifier: outNotify},
		func(res splice.Result) {
			r.stats.open.Add(-1)
			f.rec.BytesOut, f.rec.BytesIn = res.AToB, res.BToA
			if s, ok := out.(sinkSetter); ok {
				f.rec.BytesIn += s.Direct() // written by the sink, not the copy
			}
			if res.Err != nil {
				f.rec.Error = res.Err.Error()
			}
			r.endFlow(f)
			ended()
		})
}

// sinkSetter is a remote flow's connection (the tunnel's stream), whose
// data the tunnel's receive loop can write to the app's endpoint itself
// (mux.Stream.SetSink).
type sinkSetter interface {
	SetSink(splice.TryWriter)
	Direct() int64
}

// endpointSink writes to a netstack endpoint what its send buffer takes
// now, never waiting.
type endpointSink struct {
	ep tcpip.Endpoint
	r  bytes.Reader
}

func (s *endpointSink) TryWrite(p []byte) int {
	s.r.Reset(p)
	n, err := s.ep.Write(&s.r, tcpip.WriteOptions{})
	if err != nil {
		return 0 // full (ErrWouldBlock) or closed: the copy meets it
	}
	return int(n)
}

// endpointNotifier is splice's Notifier for a netstack endpoint: its
// waiter queue calls back, so an idle direction holds no goroutine.
type endpointNotifier struct {
	wq *waiter.Queue
	ep tcpip.Endpoint
}

func (n *endpointNotifier) Readable() bool { return readable(n.ep) }

// readable reports whether a netstack endpoint has something to read.
func readable(ep tcpip.Endpoint) bool {
	return ep.Readiness(waiter.ReadableEvents) != 0
}

func (n *endpointNotifier) Notify(fn func()) (func(), error) {
	e := waiter.NewFunctionEntry(waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr, func(waiter.EventMask) { fn() })
	n.wq.EventRegister(&e)
	return func() { n.wq.EventUnregister(&e) }, nil
}

// endpointWaiter waits on the netstack endpoint's readiness.
func endpointWaiter(wq *waiter.Queue, ep tcpip.Endpoint) splice.WaitFunc {
	return func(done <-chan struct{}) {
		if readable(ep) {
			return
		}
		e, ch := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
		wq.EventRegister(&e)
		defer wq.EventUnregister(&e)
		if readable(ep) {
			return
		}
		select {
		case <-ch:
		case <-done:
		}
	}
}
