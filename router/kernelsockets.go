package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns/synqueue"
	"github.com/trafficpolice/trafficpolice/origdst"
	"github.com/trafficpolice/trafficpolice/splice"
)

// KernelSockets lets the router take the app's TCP connections as kernel
// sockets instead of through the TUN and the netstack, keeping dial-first:
// the app's first SYN is held in Queue while the router dials, and the
// verdict either redirects the connection to Listeners (connected), answers
// it with a RST (refused, blocked) or drops it after the dial timed out.
// Whatever the queue does not take (no reader, full, closed) goes on to
// the TUN, where the netstack handles it as before.
type KernelSockets struct {
	Queue *synqueue.Queue
	Marks synqueue.Marks
	// Listeners listen inside the sandbox, where the rules' REDIRECT sends
	// a taken connection (127.0.0.1 and ::1, on the rules' TakePort).
	Listeners []*net.TCPListener
}

// acceptWait is how long a dialed flow waits for the app's connection at
// the listener after its SYN was let through. The app's kernel answers the
// listener's SYN-ACK at once, unless it gave up meanwhile (then nothing
// comes); a full backlog delays it by the app's retransmissions.
const acceptWait = 30 * time.Second

// taken is a dialed flow waiting for the app's connection to arrive at the
// listener.
type taken struct {
	f       *flow
	out     net.Conn
	origDst netip.AddrPort // as the kernel's conntrack tuple has it
	expire  *time.Timer
}

// takenKey names a taken flow: the app's address and port, and the
// destination it dialed (the kernel's, before the loopback alias is
// mapped back).
type takenKey struct{ src, dst netip.AddrPort }

// takenFlows holds the flows whose SYN was let through to the listener.
type takenFlows struct {
	mu sync.Mutex
	m  map[takenKey]*taken
}

// put records e, false if its key already has one.
func (t *takenFlows) put(k takenKey, e *taken) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.m[k]; dup {
		return false
	}
	if t.m == nil {
		t.m = map[takenKey]*taken{}
	}
	t.m[k] = e
	return true
}

// take removes and returns k's entry if it is still e.
func (t *takenFlows) take(k takenKey, e *taken) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[k] != e {
		return false
	}
	delete(t.m, k)
	return true
}

// arrived removes and returns the entry of a connection that arrived at the
// listener from peer, for the destination orig. The kernel keeps the app's
// port unless the connection's tuple at the listener clashes with one
// already there: connections from one app port to different destinations
// (Linux's port choice allows it) all meet at the listener's one address,
// and the NAT then gives the later ones another source port. Such a
// connection is matched by its address and destination alone: every flow
// waiting there is a fresh connection to the same destination.
func (t *takenFlows) arrived(peer, orig netip.AddrPort) *taken {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := takenKey{peer, orig}
	if e := t.m[k]; e != nil {
		delete(t.m, k)
		return e
	}
	for k, e := range t.m {
		if k.dst == orig && k.src.Addr() == peer.Addr() {
			delete(t.m, k)
			return e
		}
	}
	return nil
}

// drain removes and returns every entry.
func (t *takenFlows) drain() []*taken {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := make([]*taken, 0, len(t.m))
	for _, e := range t.m {
		all = append(all, e)
	}
	clear(t.m)
	return all
}

// nearFileLimit says whether the router's descriptors in use (about one
// per open flow's dialed socket, and one per kernel socket) reach half its
// open-file limit.
func (r *Router) nearFileLimit() bool {
	return r.kernelFDs.Load()+r.stats.open.Load() >= r.fileLimit/2
}

// startKernelSockets starts reading the queue and accepting on the
// listeners; both end when the router closes.
func (r *Router) startKernelSockets() {
	ks := r.cfg.KernelSockets
	var lim unix.Rlimit
	r.fileLimit = 1 << 20
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 1<<20 {
		r.fileLimit = int64(lim.Cur)
	}
	r.closers = append(r.closers, ks.Queue)
	for _, ln := range ks.Listeners {
		r.closers = append(r.closers, ln)
	}
	r.closers = append(r.closers, closerFunc(func() error {
		for _, e := range r.taken.drain() {
			r.endTaken(e, errors.New("the router closed before the app's connection arrived"))
		}
		return nil
	}))
	go func() {
		if err := ks.Queue.Run(r.ctx, func(syn synqueue.SYN) { go r.handleSYN(syn) }); err != nil {
			// Unbound, the queue lets SYNs by to the TUN (--queue-bypass);
			// bound and unread, it would hold them.
			ks.Queue.Close()
			r.log.Warn("kernel sockets off: the SYN queue failed; new connections go through the netstack", "err", err)
		}
	}()
	for _, ln := range ks.Listeners {
		go r.acceptTaken(ln)
	}
}

// verdict ends the hold of syn: Accept with bits (Marks.Take, Marks.Refuse,
// or 0 for the TUN's way), or Drop.
func (r *Router) verdict(syn synqueue.SYN, d synqueue.Decision, bits uint32) error {
	ks := r.cfg.KernelSockets
	mark := syn.Mark
	if bits != 0 {
		mark = ks.Marks.With(syn.Mark, bits)
	}
	err := ks.Queue.Verdict(syn.ID, d, mark)
	if err != nil && !errors.Is(err, synqueue.ErrClosed) {
		r.log.Debug("verdict on a queued SYN", "src", syn.Src, "dst", syn.Dst, "err", err)
	}
	return err
}

// handleSYN is handleTCP for a SYN held in the queue: dial first, then let
// the SYN through to the listener, or refuse it, or drop it.
func (r *Router) handleSYN(syn synqueue.SYN) {
	// The SYN parser and origdst give IPv4 addresses in their 4-byte form,
	// so keys made of either compare equal.
	src, orig := syn.Src, syn.Dst
	if r.servesDNS(orig.Addr()) {
		// The netstack's own DNS server answers TCP queries.
		r.verdict(syn, synqueue.Accept, 0)
		return
	}
	if !r.track() {
		r.verdict(syn, synqueue.Accept, r.cfg.KernelSockets.Marks.Refuse)
		return
	}
	tracked := true
	defer func() {
		if tracked {
			r.wg.Done()
		}
	}()
	if r.nearFileLimit() {
		// A kernel socket costs the router a descriptor more than the
		// netstack's connection: past half the limit, keep them for flows.
		r.stats.kernelSocketsSkipped.Add(1)
		r.warnOnceFor("kernel sockets: file limit", "kernel sockets: half of the open-file limit is in use; new connections go through the netstack",
			"limit", r.fileLimit)
		r.verdict(syn, synqueue.Accept, 0)
		return
	}
	f, out, err := r.dialTCP(src, r.appDstAddr(orig), ViaKernelSocket)
	if f == nil {
		// A dropped SYN has no conntrack entry: its retransmission is
		// queued again.
		r.verdict(syn, synqueue.Drop, 0)
		return
	}
	r.stats.kernelSockets.Add(1)
	if err != nil {
		if isTimeout(err) {
			r.verdict(syn, synqueue.Drop, 0) // the app's own timer ends its connect
		} else {
			r.verdict(syn, synqueue.Accept, r.cfg.KernelSockets.Marks.Refuse)
		}
		f.rec.Error = err.Error()
		r.endFlow(f)
		return
	}
	r.kernelFDs.Add(1) // the app's socket at the listener, until endTaken or the flow's end
	e := &taken{f: f, out: out, origDst: orig}
	key := takenKey{src, orig}
	e.expire = time.AfterFunc(acceptWait, func() {
		if r.taken.take(key, e) {
			r.endTaken(e, fmt.Errorf("app side: its connection did not arrive within %s (it gave up)", acceptWait))
		}
	})
	if !r.taken.put(key, e) {
		e.expire.Stop()
		out.Close()
		f.rec.Error = "app side: a connection from " + src.String() + " to " + orig.String() + " is already on its way"
		r.endFlow(f)
		r.verdict(syn, synqueue.Accept, 0)
		return
	}
	// Owned by the entry now: whoever takes it ends it.
	tracked = false
	if r.ctx.Err() != nil {
		// The router closed while we dialed: its drain may have run.
		if r.taken.take(key, e) {
			r.endTaken(e, errors.New("the router closed before the app's connection arrived"))
		}
		r.verdict(syn, synqueue.Accept, r.cfg.KernelSockets.Marks.Refuse)
		return
	}
	if err := r.verdict(syn, synqueue.Accept, r.cfg.KernelSockets.Marks.Take); err != nil {
		if r.taken.take(key, e) {
			r.endTaken(e, fmt.Errorf("app side: %w", err))
		}
	}
}

// endTaken ends a dialed flow whose app connection never came; the caller
// took it out of r.taken (from the expiry timer itself, Stop does nothing).
func (r *Router) endTaken(e *taken, why error) {
	e.expire.Stop()
	r.kernelFDs.Add(-1)
	e.out.Close()
	e.f.rec.Error = why.Error()
	r.endFlow(e.f)
	r.wg.Done()
}

// acceptTaken accepts the app's connections that the rules redirected to
// ln, and splices each with the flow dialed for it.
func (r *Router) acceptTaken(ln *net.TCPListener) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if r.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				r.log.Warn("kernel sockets: accept", "err", err)
				if tempErr(err) {
					time.Sleep(10 * time.Millisecond)
					continue
				}
			}
			return
		}
		r.startTaken(c)
	}
}

// startTaken matches an accepted connection with its dialed flow (see
// takenFlows.arrived). A connection with none (nothing the router let
// through) is reset.
func (r *Router) startTaken(c *net.TCPConn) {
	peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	orig, err := origdst.Of(c)
	var e *taken
	if err == nil {
		e = r.taken.arrived(peer, orig)
	}
	if e == nil {
		r.log.Debug("kernel sockets: resetting a connection no flow waited for", "peer", peer, "orig", orig, "err", err)
		r.stats.strangers.Add(1)
		// A reset from the socket: the rules drop the bare RST its
		// orphan would answer the app's next data with.
		splice.Abort(c)
		return
	}
	e.expire.Stop()
	r.spliceTCP(e.f, c, e.out, splice.NewTCPTryWriter(c), splice.TCPWait(c), splice.TCPNotifier(c), func() {
		r.kernelFDs.Add(-1)
		r.wg.Done()
	})
}

// servesDNS says whether a is one of the netstack's DNS addresses.
func (r *Router) servesDNS(a netip.Addr) bool {
	for _, d := range r.cfg.DNSAddrs {
		if d == a {
			return true
		}
	}
	return false
}

// tempErr says whether an accept error passes (out of descriptors, say).
func tempErr(err error) bool {
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary()
}
