package router

import (
	"context"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/splice"
)

const (
	// maxPendingDials bounds connection attempts in progress; SYNs beyond it
	// are dropped and retransmitted by the app, as a kernel's full backlog.
	maxPendingDials = 4096
	// tcpDialTimeout is about what Linux takes to give up on an unanswered
	// SYN (tcp_syn_retries=6); the app usually gives up first.
	tcpDialTimeout = 130 * time.Second
	// timeWait is how long the router's side of a closed flow stays in
	// TIME_WAIT (see newStack).
	timeWait = 100 * time.Millisecond
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
	r.splice(f, in, out, endpointWaiter(&wq, ep), splice.TCPWait(out))
}

func (r *Router) endFlow(f *flow) {
	f.rec.End = time.Now()
	r.flows.write(&f.rec)
}

// splice copies both ways until both directions end, then closes both.
// Half-closes pass through (the app's shutdown(SHUT_WR) reaches the peer).
// inWait and outWait, when not nil, wait until a read on in or out would
// not block, so that an idle flow holds no copy buffer.
func (r *Router) splice(f *flow, in, out net.Conn, inWait, outWait splice.WaitFunc) {
	r.stats.open.Add(1)
	res := splice.Both(r.ctx, splice.Side{Conn: splice.AsConn(in), Wait: inWait}, splice.Side{Conn: splice.AsConn(out), Wait: outWait})
	r.stats.open.Add(-1)
	f.rec.BytesOut, f.rec.BytesIn = res.AToB, res.BToA
	if res.Err != nil {
		f.rec.Error = res.Err.Error()
	}
	r.endFlow(f)
}

// endpointWaiter waits on the netstack endpoint's readiness.
func endpointWaiter(wq *waiter.Queue, ep tcpip.Endpoint) splice.WaitFunc {
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
