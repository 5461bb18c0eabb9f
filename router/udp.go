package router

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

const (
	// udpIdleTimeout ends a UDP flow nobody used for this long, as a NAT's
	// conntrack entry would expire.
	udpIdleTimeout = 60 * time.Second
	// dnsIdleTimeout is shorter: a query and its answer are the whole flow.
	dnsIdleTimeout = 10 * time.Second
	udpDialTimeout = 30 * time.Second
	maxDatagram    = 64 << 10
)

// handleUDP runs in the netstack's receive path for the first datagram of
// every new (source, destination) pair, so connected and unconnected
// (sendto) UDP are routed alike. It must not block: it creates the
// endpoint, which queues the datagram, and leaves the rest to a goroutine.
func (r *Router) handleUDP(req *udp.ForwarderRequest) bool {
	id := req.ID()
	src := netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort)
	dst := r.appDst(id.LocalAddress, id.LocalPort)
	if r.asksAppListens(dst) {
		// Deciding this flow may re-read the app's listeners from /proc,
		// and this runs on the netstack's packet loop: take the datagrams
		// into an endpoint now and decide off the loop.
		return r.handleUDPOffLoop(req, src, dst)
	}
	f := r.newFlow(policy.UDP, src, dst)
	r.stats.udpFlows.Add(1)
	if f.decision.Route == policy.Block {
		r.refuseUDP(f, src, id)
		return true
	}
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if terr != nil {
		f.rec.Error = "app side: " + terr.String()
		r.endFlow(f)
		return true
	}
	in := gonet.NewUDPConn(&wq, ep)
	if !r.track() {
		f.rec.Error = "the router is closing"
		in.Close()
		r.endFlow(f)
		return true
	}
	go func() {
		defer r.wg.Done()
		r.relayUDP(f, in, ep)
	}()
	return true
}

// handleUDPOffLoop creates the flow's endpoint at once, so that the app's
// next datagrams queue in it rather than start flows of their own, and
// decides the flow on its own goroutine.
func (r *Router) handleUDPOffLoop(req *udp.ForwarderRequest, src, dst netip.AddrPort) bool {
	id := req.ID()
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if !r.track() {
		if terr == nil {
			ep.Close()
		}
		return true
	}
	go func() {
		defer r.wg.Done()
		f := r.newFlow(policy.UDP, src, dst)
		r.stats.udpFlows.Add(1)
		if terr != nil {
			f.rec.Error = "app side: " + terr.String()
			r.endFlow(f)
			return
		}
		in := gonet.NewUDPConn(&wq, ep)
		if f.decision.Route == policy.Block {
			r.refuseUDP(f, src, id)
			in.Close()
			return
		}
		r.relayUDP(f, in, ep)
	}()
	return true
}

// refuseUDP answers a blocked datagram with ICMP port unreachable, so the
// app learns at once, and ends its flow.
func (r *Router) refuseUDP(f *flow, src netip.AddrPort, id stack.TransportEndpointID) {
	r.stats.blocked.Add(1)
	r.sendUnreachable(src, netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort))
	f.rec.Error = errBlocked.Error()
	r.endFlow(f)
}

func (r *Router) relayUDP(f *flow, in *gonet.UDPConn, ep tcpip.Endpoint) {
	ctx, cancel := context.WithTimeout(r.ctx, udpDialTimeout)
	out, err := r.dial(ctx, f)
	cancel()
	if err != nil {
		r.stats.failed.Add(1)
		in.Close()
		f.rec.Error = err.Error()
		r.endFlow(f)
		return
	}
	idle := udpIdleTimeout
	if f.dst.Port() == 53 {
		idle = dnsIdleTimeout
	}
	r.stats.open.Add(1)
	stop := context.AfterFunc(r.ctx, func() { in.Close(); out.Close() })
	var outBytes, inBytes atomic.Int64
	var lastActive atomic.Int64
	touch := func() { lastActive.Store(time.Now().UnixNano()) }
	touch()
	done := make(chan struct{})
	go func() {
		defer close(done)
		relayDatagrams(out, in, &inBytes, touch, idle, &lastActive, nil)
	}()
	queued := func() bool { return readable(ep) }
	relayDatagrams(in, out, &outBytes, touch, idle, &lastActive, queued)
	in.Close()
	out.Close()
	<-done
	stop()
	r.stats.open.Add(-1)
	f.rec.BytesOut, f.rec.BytesIn = outBytes.Load(), inBytes.Load()
	r.endFlow(f)
}

// relayDatagrams copies datagrams from src to dst until neither direction
// has carried one for idle, or either side fails. When dst takes batches
// (a tunnel stream) and queued tells that src holds more, those go with
// the first in one write: a tunnel write per datagram bounded the remote
// path's UDP rate.
func relayDatagrams(src, dst net.Conn, n *atomic.Int64, touch func(), idle time.Duration, lastActive *atomic.Int64, queued func() bool) {
	buf := make([]byte, maxDatagram)
	bw, _ := dst.(batchWriter)
	if bw == nil {
		queued = nil
	}
	var b batch
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		nr, err := src.Read(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				// The other direction may have been busy meanwhile.
				if time.Since(time.Unix(0, lastActive.Load())) < idle {
					continue
				}
			}
			return
		}
		touch()
		if queued != nil && queued() {
			b.reset(buf[:nr])
			b.fill(src, queued)
			// A batch the tunnel refuses ended the flow (see WriteBatch).
			nw, err := bw.WriteBatch(b.datagrams)
			if err != nil {
				return
			}
			n.Add(int64(nw))
			continue
		}
		if _, err := dst.Write(buf[:nr]); err != nil {
			// A refused datagram (ICMP port unreachable on the host side)
			// is not the end of a UDP flow.
			continue
		}
		n.Add(int64(nr))
	}
}

// batchWriter sends several datagrams in one write, in order, and
// returns their bytes.
type batchWriter interface {
	WriteBatch(datagrams [][]byte) (int, error)
}

// Bounds of one batch: the datagrams the app queued, up to these.
const (
	maxBatchDatagrams = 64
	batchArena        = 4 * maxDatagram
)

// batch gathers the datagrams already queued on a source.
type batch struct {
	arena     []byte // allocated at the first batch: most flows never queue
	datagrams [][]byte
}

func (b *batch) reset(first []byte) {
	b.datagrams = append(b.datagrams[:0], first)
}

// fill reads queued datagrams, each known to be there (no deadline), while
// the arena has room for one of the largest.
func (b *batch) fill(src net.Conn, queued func() bool) {
	if b.arena == nil {
		b.arena = make([]byte, batchArena)
	}
	off := 0
	src.SetReadDeadline(time.Time{})
	for len(b.datagrams) < maxBatchDatagrams && len(b.arena)-off >= maxDatagram && queued() {
		nr, err := src.Read(b.arena[off : off+maxDatagram])
		if err != nil {
			return
		}
		b.datagrams = append(b.datagrams, b.arena[off:off+nr])
		off += nr
	}
}
