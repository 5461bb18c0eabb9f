package incoming

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// Service keeps the subscriptions of all tunnels to the pod's ports and
// the nat rules that go with them: a port has its redirect while at least
// one subscription (attached to a tunnel or lingering after losing it)
// holds it. Its redirect listeners hand each new connection to the
// subscriptions of its port.
type Service struct {
	log   *slog.Logger
	rules nat.PortRules
	// reserved ports are never redirected (the agent's own tunnel port:
	// stealing it would cut the tunnel itself).
	reserved map[uint16]string
	// linger is how long a subscription outlives its tunnel when the
	// client did not ask for another time; maxLinger the most it may ask
	// for (Options.MaxLinger).
	linger, maxLinger time.Duration
	// openTimeout bounds opening a stream to a client and its answer.
	openTimeout time.Duration
	dialTimeout time.Duration
	// httpIdleTimeout and httpHeadTimeout: see Options.
	httpIdleTimeout, httpHeadTimeout time.Duration
	// dial reaches the original destination, past the nat rules
	// (dialPod); tests that run without them use a plain dialer.
	dial func(ctx context.Context, dst netip.AddrPort) (*net.TCPConn, error)

	// mu is read-locked by what every connection and HTTP request reads
	// (route, open): they only wait for subscription changes.
	mu     sync.RWMutex
	ports  map[uint16][]*subscription // in the order they came
	closed bool

	mirrorDrops  atomic.Uint64 // copies given up because a client lagged
	mirrorCopies atomic.Int64  // mirror copies whose goroutine still runs
	// mirrorStall is how long a mirror copy may wait for its client to
	// take a byte before it is given up (Options.MirrorStallTimeout).
	mirrorStall time.Duration

	// Set by Start: what Close removes.
	natRules       nat.Rules
	closeListeners func()

	// published is who holds which port, as other agents in the pod ask
	// it (nat.HoldLiveness); kept apart from mu so that answering never
	// waits for a subscription change.
	published atomic.Pointer[nat.Holders]
	// otherHolders asks the pod's other agents who holds a port before
	// this one redirects it (Start sets it; nil: no other agents).
	otherHolders func(port uint16) ([]string, error)
	// lockPort takes a port's redirect lock among the pod's agents (Start
	// sets it to nat.LockPort; nil: no other agents); unlocks holds what
	// releasing each redirected port lets go.
	lockPort func(port uint16) (func(), error)
	unlocks  map[uint16]func()
}

// subscription is one client's steal or mirror of one pod port.
type subscription struct {
	mode   proto.IncomingMode
	port   uint16
	owner  string
	label  string
	filter *httpFilter // nil: whole connections
	linger time.Duration

	// mirrorHeld is the bytes of this subscription's mirror copies that
	// wait with the agent (maxTapQueue).
	mirrorHeld atomic.Int64

	// Under incoming.mu.
	peer  *Peer // nil while lingering after its tunnel was lost
	gone  bool
	timer *time.Timer
}

func (s *subscription) String() string {
	return fmt.Sprintf("%s of port %d by %s (%s)", s.mode, s.port, s.label, s.filter)
}

func newService(log *slog.Logger, rules nat.PortRules, opts Options) *Service {
	in := &Service{
		log:         log,
		rules:       rules,
		reserved:    map[uint16]string{},
		linger:      opts.Linger,
		maxLinger:   cmp.Or(opts.MaxLinger, DefaultMaxLinger),
		openTimeout: opts.OpenTimeout,
		dialTimeout: opts.DialTimeout,
		ports:       map[uint16][]*subscription{},

		mirrorStall:     cmp.Or(opts.MirrorStallTimeout, DefaultMirrorStallTimeout),
		httpIdleTimeout: cmp.Or(opts.HTTPIdleTimeout, DefaultHTTPIdleTimeout),
		httpHeadTimeout: cmp.Or(opts.HTTPHeadTimeout, DefaultHTTPHeadTimeout),
	}
	in.dial = in.dialPod
	return in
}

// subscribe adds t's subscription; it replaces one of the same owner and
// port (a client back after a reconnection). A steal of whole connections
// is exclusive: it is refused while another client steals the port, and
// it keeps filtered steals of others out.
func (in *Service) subscribe(p *Peer, req proto.Subscribe) (*subscription, error) {
	if why, ok := in.reserved[req.Port]; ok {
		return nil, fmt.Errorf("port %d cannot be stolen or mirrored: it is %s", req.Port, why)
	}
	f, err := compileFilter(req.Filter)
	if err != nil {
		return nil, err
	}
	label := req.Label
	if label == "" {
		label = "a client at " + p.Remote
	}
	s := &subscription{mode: req.Mode, port: req.Port, owner: req.Owner, label: label, filter: f, linger: req.Linger, peer: p}
	if s.linger <= 0 {
		s.linger = in.linger
	}
	if s.linger > in.maxLinger {
		// A port held for a client that never comes back is a port the
		// pod's app does not get: the client asks, the agent bounds.
		in.log.Info("the client asked to keep its subscription longer than the agent allows", "client", p.Remote, "asked", s.linger, "max", in.maxLinger)
		s.linger = in.maxLinger
	}

	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return nil, errors.New("the agent is shutting down")
	}
	var kept []*subscription
	var replaced []*subscription
	for _, o := range in.ports[req.Port] {
		if req.Owner != "" && o.owner == req.Owner {
			replaced = append(replaced, o)
			continue
		}
		kept = append(kept, o)
	}
	if s.mode == proto.ModeSteal {
		var holders []string
		for _, o := range kept {
			if o.mode != proto.ModeSteal {
				continue
			}
			if o.filter == nil {
				return nil, fmt.Errorf("port %d is already stolen whole by %s: no other steal can share it until they stop", req.Port, o.label)
			}
			holders = append(holders, fmt.Sprintf("%s (%s)", o.label, o.filter))
		}
		if s.filter == nil && len(holders) > 0 {
			return nil, fmt.Errorf("port %d is already stolen by %s: stealing whole connections needs the port to itself; ask them to stop, or steal with an HTTP filter that tells your requests apart", req.Port, strings.Join(holders, " and "))
		}
	}
	if len(in.ports[req.Port]) == 0 {
		if err := in.lockLocked(req.Port); err != nil {
			return nil, err
		}
		if err := in.rules.Add(req.Port); err != nil {
			in.unlockLocked(req.Port)
			return nil, fmt.Errorf("redirect port %d to the agent: %w", req.Port, err)
		}
	}
	for _, o := range replaced {
		o.gone = true
		if o.timer != nil {
			o.timer.Stop()
		}
	}
	in.ports[req.Port] = append(kept, s)
	in.publishLocked()
	in.log.Info("subscribed", "sub", s.String(), "replaced", len(replaced))
	return s, nil
}

// lockLocked takes port's redirect lock among the pod's agents before its
// first redirect: another agent that redirects it would lose it to ours
// without a word, so the subscription is refused, with the holders' names
// when they answer. The lock (nat.LockPort) settles two agents that start
// at the same instant; asking the others covers agents older than it.
func (in *Service) lockLocked(port uint16) error {
	if in.lockPort == nil {
		return nil
	}
	unlock, lockErr := in.lockPort(port)
	var held []string
	if in.otherHolders != nil {
		var err error
		if held, err = in.otherHolders(port); err != nil {
			in.log.Warn("asking the pod's other agents who holds a port", "port", port, "err", err)
		}
	}
	if lockErr == nil && len(held) == 0 {
		if in.unlocks == nil {
			in.unlocks = map[uint16]func(){}
		}
		in.unlocks[port] = unlock
		return nil
	}
	if unlock != nil {
		unlock()
	}
	const why = "two agents cannot both redirect a port (the newer would silently take it); ask them to stop, or join their agent"
	switch {
	case len(held) > 0:
		return fmt.Errorf("port %d is already redirected by another trafficpolice agent in this pod, for %s: %s", port, strings.Join(held, " and "), why)
	case errors.Is(lockErr, nat.ErrPortLocked):
		return fmt.Errorf("port %d is already being redirected by another trafficpolice agent in this pod (it has not said for whom yet): %s", port, why)
	}
	return lockErr
}

// unlockLocked lets go of port's redirect lock.
func (in *Service) unlockLocked(port uint16) {
	if unlock := in.unlocks[port]; unlock != nil {
		unlock()
		delete(in.unlocks, port)
	}
}

// publishLocked updates what other agents are told about our ports.
func (in *Service) publishLocked() {
	h := nat.Holders{}
	for port, subs := range in.ports {
		for _, s := range subs {
			h[port] = append(h[port], fmt.Sprintf("%s (%s)", s.label, s.mode))
		}
	}
	in.published.Store(&h)
}

// holders answers other agents (nat.HoldLiveness).
func (in *Service) holders() nat.Holders {
	if h := in.published.Load(); h != nil {
		return *h
	}
	return nil
}

// release ends s at once; the port's redirect goes with its last
// subscription.
func (in *Service) release(s *subscription) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.releaseLocked(s)
}

func (in *Service) releaseLocked(s *subscription) {
	if s.gone {
		return
	}
	s.gone = true
	if s.timer != nil {
		s.timer.Stop()
	}
	subs := in.ports[s.port]
	for i, o := range subs {
		if o == s {
			subs = append(subs[:i:i], subs[i+1:]...)
			break
		}
	}
	defer in.publishLocked()
	if len(subs) > 0 {
		in.ports[s.port] = subs
		in.log.Info("unsubscribed", "sub", s.String())
		return
	}
	delete(in.ports, s.port)
	if err := in.rules.Remove(s.port); err != nil {
		in.log.Error("remove the redirect of a port", "port", s.port, "err", err)
	}
	in.unlockLocked(s.port)
	in.log.Info("unsubscribed; the port is the pod's again", "sub", s.String())
}

// detach keeps s for its linger time after its tunnel was lost, so that
// the client can take it back when it reconnects; meanwhile its traffic
// goes to the pod's app.
func (in *Service) detach(s *subscription) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if s.gone {
		return
	}
	s.peer = nil
	in.log.Info("tunnel lost; keeping the subscription for a while", "sub", s.String(), "for", s.linger)
	s.timer = time.AfterFunc(s.linger, func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		if s.peer == nil {
			in.releaseLocked(s)
		}
	})
}

// close ends every subscription and refuses new ones.
func (in *Service) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
	for _, subs := range in.ports {
		for _, s := range subs {
			in.releaseLocked(s)
		}
	}
}

// route is what a new connection (or request) to a port goes to: the
// attached subscriptions, by kind.
type route struct {
	stealAll  *subscription   // steal of whole connections
	steal     []*subscription // filtered steals, in order
	mirrorAll []*subscription // mirrors of whole connections
	mirror    []*subscription // filtered mirrors
}

func (r route) empty() bool {
	return r.stealAll == nil && len(r.steal) == 0 && len(r.mirrorAll) == 0 && len(r.mirror) == 0
}

func (r route) filtered() bool { return len(r.steal) > 0 || len(r.mirror) > 0 }

func (in *Service) route(port uint16) route {
	in.mu.RLock()
	defer in.mu.RUnlock()
	var r route
	for _, s := range in.ports[port] {
		if s.peer == nil || s.gone {
			continue
		}
		switch {
		case s.mode == proto.ModeSteal && s.filter == nil:
			r.stealAll = s
		case s.mode == proto.ModeSteal:
			r.steal = append(r.steal, s)
		case s.filter == nil:
			r.mirrorAll = append(r.mirrorAll, s)
		default:
			r.mirror = append(r.mirror, s)
		}
	}
	return r
}

// errTunnelLost means a subscription's client is gone (for now): its
// traffic goes to the pod's app meanwhile.
var errTunnelLost = errors.New("its tunnel is lost")

// open opens a stream to s's client for one connection and waits for the
// client to reach its app.
func (in *Service) open(ctx context.Context, s *subscription, src, dst netip.AddrPort) (*mux.Stream, error) {
	in.mu.RLock()
	p := s.peer
	in.mu.RUnlock()
	if p == nil {
		return nil, fmt.Errorf("%s: %w", s, errTunnelLost)
	}
	st, err := p.Session.OpenStream()
	if err != nil {
		if p.Session.IsClosed() {
			err = errors.Join(err, errTunnelLost)
		}
		return nil, fmt.Errorf("open a stream to %s: %w", s.label, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Now()) })
	defer stop()
	_ = st.SetDeadline(time.Now().Add(in.openTimeout))
	err = proto.WriteMessage(st, proto.Incoming{Mode: s.mode, Port: s.port, Src: src, Dst: dst})
	var m proto.Message
	if err == nil {
		m, err = proto.ReadMessage(st)
	}
	if err != nil {
		_ = st.Close()
		if p.Session.IsClosed() {
			err = errors.Join(err, errTunnelLost)
		}
		return nil, fmt.Errorf("hand a connection to %s: %w", s.label, err)
	}
	res, ok := m.(proto.Result)
	if !ok {
		_ = st.Close()
		return nil, fmt.Errorf("%s answered Incoming with %s, want Result", s.label, m.Type())
	}
	if res.Class != proto.ClassOK {
		_ = st.Close()
		return nil, fmt.Errorf("%s could not reach its app: %s", s.label, res.Message)
	}
	_ = st.SetDeadline(time.Time{})
	return st, nil
}
