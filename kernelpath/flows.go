package kernelpath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"github.com/trafficpolice/trafficpolice/router/policy"
	"golang.org/x/sys/unix"
)

// Flow is one finished (or, at the run's end, still open) connection of
// the kernel path, as the sandbox's conntrack saw it.
type Flow struct {
	Proto      policy.Proto // TCP or UDP
	Src, Dst   netip.AddrPort
	Start, End time.Time
	// BytesOut and BytesIn count IP packets' bytes (headers included),
	// app to destination and back.
	BytesOut, BytesIn uint64
}

// flowBuffer is the receive buffer of the conntrack events' socket: a burst
// of short connections must not overflow it before the reader catches up.
const flowBuffer = 8 << 20

// WatchFlows reports each kernel-path flow to fn once it ends: from the
// sandbox's conntrack (Config.Track keeps the flows tracked, with byte
// counters and timestamps). stop reports the flows still open, ends the
// watch and returns an error when the kernel dropped events (flows were
// missed) or the watch failed. fn is called from one goroutine at a time.
func (p *Path) WatchFlows(fn func(Flow)) (stop func() error, err error) {
	if !p.track {
		return nil, errors.New("kernel path: WatchFlows needs Config.Track")
	}
	f, err := os.Open(p.ns.Path())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p.ns, err)
	}
	defer f.Close()
	events, err := conntrack.Dial(&netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		return nil, fmt.Errorf("kernel path: conntrack events in %s: %w", p.ns, err)
	}
	dumps, err := conntrack.Dial(&netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		events.Close()
		return nil, fmt.Errorf("kernel path: conntrack in %s: %w", p.ns, err)
	}
	if err := events.SetReadBuffer(flowBuffer); err != nil {
		events.Close()
		dumps.Close()
		return nil, fmt.Errorf("kernel path: conntrack buffer: %w", err)
	}
	evc := make(chan conntrack.Event, 1024)
	errc, err := events.Listen(evc, 1, []netfilter.NetlinkGroup{netfilter.GroupCTDestroy})
	if err != nil {
		events.Close()
		dumps.Close()
		return nil, fmt.Errorf("kernel path: listen for conntrack events: %w", err)
	}
	w := &flowWatch{src: p.sandboxAddr.Addr(), fn: fn, dumped: map[uint32]bool{}}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case ev := <-evc:
				if ev.Type == conntrack.EventDestroy && ev.Flow != nil {
					w.report(*ev.Flow, false)
				}
			case err := <-errc:
				// The worker that failed has stopped (an overflow:
				// ENOBUFS); the loop drains on until quit.
				w.fail(err)
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	var stopErr error
	return func() error {
		once.Do(func() {
			// The dump first, while events still come: a flow ends in
			// one or the other, and dumped keeps it from both.
			flows, err := dumps.Dump(nil)
			dumps.Close()
			if err != nil {
				w.fail(fmt.Errorf("dump the sandbox's conntrack: %w", err))
			}
			for _, fl := range flows {
				w.report(fl, true)
			}
			// Close waits for the event workers, which may be sending:
			// the loop drains until they are gone.
			events.Close()
			close(quit)
			<-done
			stopErr = w.err()
		})
		return stopErr
	}, nil
}

// flowWatch turns conntrack flows of the kernel path into Flows, once each:
// a flow ends in a DESTROY event, or is still open in the final dump. Only
// the dump's ids are kept (a DESTROY event comes once, and the kernel reuses
// ids), so the set is bounded by the flows open at the end.
type flowWatch struct {
	src netip.Addr
	fn  func(Flow)

	mu      sync.Mutex
	dumped  map[uint32]bool
	failure error
}

func (w *flowWatch) report(f conntrack.Flow, fromDump bool) {
	t := f.TupleOrig
	if t.IP.SourceAddress != w.src {
		return // not the kernel path's
	}
	var proto policy.Proto
	switch t.Proto.Protocol {
	case unix.IPPROTO_TCP:
		proto = policy.TCP
	case unix.IPPROTO_UDP:
		proto = policy.UDP
	default:
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dumped[f.ID] {
		return // reported from the dump; it ended since
	}
	end := f.Timestamp.Stop
	if fromDump {
		w.dumped[f.ID] = true
	}
	if fromDump || end.IsZero() {
		end = time.Now() // still open: it ends with the run
	}
	w.fn(Flow{
		Proto:    proto,
		Src:      netip.AddrPortFrom(t.IP.SourceAddress, t.Proto.SourcePort),
		Dst:      netip.AddrPortFrom(t.IP.DestinationAddress, t.Proto.DestinationPort),
		Start:    f.Timestamp.Start,
		End:      end,
		BytesOut: f.CountersOrig.Bytes,
		BytesIn:  f.CountersReply.Bytes,
	})
}

func (w *flowWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failure == nil {
		w.failure = fmt.Errorf("kernel path flows may be missing from the flow log: %w", err)
	}
}

func (w *flowWatch) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failure
}
