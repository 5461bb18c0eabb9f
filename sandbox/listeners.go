package sandbox

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// listenerPoll is how often the app's listening sockets are re-read. A flow
// that races a new listener still works: the router asks listens(), which
// re-reads on a miss, and dials the app inside the sandbox.
const listenerPoll = 250 * time.Millisecond

// listenerWatch keeps track of the app's listening ports, and keeps the
// app's loopback traffic to its own TCP listeners inside the namespace (a
// bypass rule per port) so it never makes the trip through the router.
type listenerWatch struct {
	ns  space
	log *slog.Logger

	mu       sync.Mutex
	tcp, udp map[uint16]bool
	bypassed map[uint16]bool
	onTCP    func(map[uint16]bool) // told the TCP ports after each poll (incoming.go)

	// readMu serialises the re-reads of listens; lastReadStart is when the
	// newest finished one began. A read that began after a flow arrived
	// saw every listener the app had when it connected.
	readMu        sync.Mutex
	lastReadStart time.Time

	cancel context.CancelFunc
	done   chan struct{}
}

func newListenerWatch(ns space, log *slog.Logger) *listenerWatch {
	return &listenerWatch{ns: ns, log: log, tcp: map[uint16]bool{}, udp: map[uint16]bool{}, bypassed: map[uint16]bool{}}
}

func (w *listenerWatch) start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		t := time.NewTicker(listenerPoll)
		defer t.Stop()
		for {
			w.refresh()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (w *listenerWatch) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
}

// refresh re-reads the listening sockets and updates the bypass rules.
func (w *listenerWatch) refresh() {
	tcp, udp, err := w.ns.ListeningPorts()
	if err != nil {
		w.log.Debug("read listening ports", "err", err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tcp, w.udp = tcp, udp
	if w.onTCP != nil {
		w.onTCP(tcp)
	}
	for p := range tcp {
		if !w.bypassed[p] {
			if err := w.ns.ListenerBypass(true, "tcp", p); err != nil {
				w.log.Debug("listener bypass", "port", p, "err", err)
				continue
			}
			w.bypassed[p] = true
		}
	}
	for p := range w.bypassed {
		if !tcp[p] {
			if err := w.ns.ListenerBypass(false, "tcp", p); err != nil {
				w.log.Debug("remove listener bypass", "port", p, "err", err)
				continue
			}
			delete(w.bypassed, p)
		}
	}
}

// listens answers the router's question for a loopback flow; on a miss it
// re-reads, so a listener that appeared since the last poll is found (an
// app often listens and connects to itself within microseconds). Misses
// are loopback flows to the pod's or host's loopback: rare enough.
func (w *listenerWatch) listens(proto policy.Proto, port uint16) bool {
	if w.has(proto, port) {
		return true
	}
	// A burst of loopback flows to the pod's or host's loopback shares
	// one re-read instead of one each.
	arrived := time.Now()
	w.readMu.Lock()
	defer w.readMu.Unlock()
	if w.lastReadStart.After(arrived) {
		return w.has(proto, port)
	}
	start := time.Now()
	tcp, udp, err := w.ns.ListeningPorts()
	if err != nil {
		w.log.Debug("read listening ports", "err", err)
		return false
	}
	w.mu.Lock()
	w.tcp, w.udp = tcp, udp
	w.mu.Unlock()
	w.lastReadStart = start
	// Answer from this read: the poller may store an older one meanwhile.
	return listensIn(tcp, udp, proto, port)
}

func (w *listenerWatch) has(proto policy.Proto, port uint16) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return listensIn(w.tcp, w.udp, proto, port)
}

func listensIn(tcp, udp map[uint16]bool, proto policy.Proto, port uint16) bool {
	switch proto {
	case policy.TCP:
		return tcp[port]
	case policy.UDP:
		return udp[port]
	}
	return tcp[port] || udp[port]
}

// watchTCP calls fn with the app's TCP ports now and after every poll; fn
// must not block.
func (w *listenerWatch) watchTCP(fn func(map[uint16]bool)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onTCP = fn
	fn(w.tcp)
}
