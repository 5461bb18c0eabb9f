package routertest

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// oneLoop hands the router every packet the app sends on one goroutine,
// as the sandbox's TUN reader does, so that work the router does on its
// receive path holds up the packets behind it here as it would there. (The
// in-memory pipe alone delivers on each writer's goroutine.)
type oneLoop struct {
	stack.LinkEndpoint
	packets chan queued
	done    chan struct{}
	stop    sync.Once
	wg      sync.WaitGroup
}

type queued struct {
	proto tcpip.NetworkProtocolNumber
	pkt   *stack.PacketBuffer
}

func newOneLoop(inner stack.LinkEndpoint) *oneLoop {
	return &oneLoop{LinkEndpoint: inner, packets: make(chan queued, 256), done: make(chan struct{})}
}

// Attach implements stack.LinkEndpoint.
func (l *oneLoop) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.LinkEndpoint.Attach(nil)
		return
	}
	l.LinkEndpoint.Attach(queueing{l})
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case q := <-l.packets:
				d.DeliverNetworkPacket(q.proto, q.pkt)
				q.pkt.DecRef()
			case <-l.done:
				return
			}
		}
	}()
}

// Close implements stack.LinkEndpoint: the loop ends with the link.
func (l *oneLoop) Close() {
	l.stop.Do(func() { close(l.done) })
	l.wg.Wait()
	l.LinkEndpoint.Close()
}

// queueing is the dispatcher the pipe sees: it queues for the loop.
type queueing struct{ l *oneLoop }

func (q queueing) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	pkt.IncRef()
	select {
	case q.l.packets <- queued{proto, pkt}:
	case <-q.l.done:
		pkt.DecRef()
	}
}

func (q queueing) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
