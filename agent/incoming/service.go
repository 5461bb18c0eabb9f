package incoming

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// Options configure the incoming traffic of an agent.
type Options struct {
	Log *slog.Logger
	// Backend writes the nat rules (nat.Auto when empty).
	Backend nat.Backend
	// Linger is how long a subscription outlives its tunnel when the
	// client did not ask for another time.
	Linger time.Duration
	// MaxLinger caps the linger time a client asks for; zero means
	// DefaultMaxLinger.
	MaxLinger time.Duration
	// OpenTimeout bounds opening a stream to a client and its answer;
	// DialTimeout a dial to the pod's app.
	OpenTimeout, DialTimeout time.Duration
	// Reserved ports are never redirected, with the reason (the agent's
	// own tunnel port: stealing it would cut the tunnel itself).
	Reserved map[uint16]string
	// HTTPIdleTimeout and HTTPHeadTimeout bound, on an HTTP-filtered port,
	// the wait for a keep-alive connection's next request and for the rest
	// of a request head once it started; zero means the defaults.
	HTTPIdleTimeout, HTTPHeadTimeout time.Duration
	// MirrorStallTimeout is how long a mirror copy may wait for its
	// client to take a byte before it is given up and closed; zero means
	// DefaultMirrorStallTimeout.
	MirrorStallTimeout time.Duration
}

// Defaults of the HTTP filter's limits. The idle limit is longer than the
// keep-alive limits of common servers (nginx 75 s, Node 5 s), so the agent
// does not close a connection that the pod's app would have kept; the head
// limit is nginx's client_header_timeout.
const (
	DefaultHTTPIdleTimeout = 2 * time.Minute
	DefaultHTTPHeadTimeout = time.Minute
	// DefaultMirrorStallTimeout: a client that takes no byte of a copy for
	// this long has stopped reading it (yamux's keep-alives would have
	// ended a dead tunnel sooner).
	DefaultMirrorStallTimeout = 30 * time.Second
	// DefaultMaxLinger bounds how long a lost client's subscriptions keep
	// their ports from the pod's app: long enough for a laptop to come back
	// from a network change, short of holding a port for a client that
	// is gone for good.
	DefaultMaxLinger = 10 * time.Minute
)

// Peer is one client's tunnel as incoming traffic sees it: the session it
// opens a stream on for each connection it hands over.
type Peer struct {
	Log     *slog.Logger
	Session *mux.Session
	// Remote is the client's address, for labels and logs.
	Remote string
}

// Start sets up steal and mirror: the agent's id and liveness socket, the
// redirect listeners and the nat rules (in the backend opts.Backend
// picks), after removing the rules of dead agents. The listeners' and
// connections' goroutines join wg and end with ctx. An error means
// something is missing (no NET_ADMIN, no nat in the kernel): the agent
// still serves outgoing traffic, and tells every client why incoming
// traffic cannot work. Close undoes it.
func Start(ctx context.Context, opts Options, wg *sync.WaitGroup) (*Service, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("random agent id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	// The liveness socket answers the pod's other agents from the
	// service, which exists only further down.
	var answer atomic.Pointer[Service]
	live, err := nat.HoldLiveness(id, func() nat.Holders {
		if in := answer.Load(); in != nil {
			return in.holders()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if removed, err := nat.SweepStale(id, opts.Log); err != nil {
		opts.Log.Warn("removing the nat rules of dead agents", "err", err, "removed", removed)
	}
	var lc net.ListenConfig
	ln4, err := lc.Listen(ctx, "tcp4", "0.0.0.0:0")
	if err != nil {
		_ = live.Close()
		return nil, fmt.Errorf("listen for redirected connections: %w", err)
	}
	lns := []*net.TCPListener{ln4.(*net.TCPListener)}
	var port6 uint16
	if ln6, err := lc.Listen(ctx, "tcp6", "[::]:0"); err == nil {
		lns = append(lns, ln6.(*net.TCPListener))
		port6 = uint16(ln6.Addr().(*net.TCPAddr).Port)
	}
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
		_ = live.Close()
	}
	rules, err := nat.New(opts.Backend, id, uint16(ln4.Addr().(*net.TCPAddr).Port), port6, opts.Log)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("set up nat rules in the pod (the agent needs the NET_ADMIN capability, and nat in the kernel's nf_tables or a working iptables): %w", err)
	}
	in := newService(opts.Log, rules, opts)
	for port, why := range opts.Reserved {
		in.reserved[port] = why
	}
	for _, ln := range lns {
		in.reserved[uint16(ln.Addr().(*net.TCPAddr).Port)] = "the agent's redirect port"
	}
	in.natRules = rules
	in.closeListeners = closeAll
	in.otherHolders = func(port uint16) ([]string, error) { return nat.OtherHolders(id, port) }
	in.lockPort = nat.LockPort
	answer.Store(in)
	opts.Log.Info("incoming traffic ready", "nat_backend", string(rules.Kind()), "rules", rules.Where())
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.serveRedirected(ctx, ln, wg)
		}()
	}
	return in, nil
}

// Close ends every subscription, stops taking redirected connections and
// removes the agent's nat rules: the pod gets its ports back at once.
func (in *Service) Close() {
	in.close()
	if in.closeListeners != nil {
		in.closeListeners()
	}
	if in.natRules == nil {
		return
	}
	where := in.natRules.Where()
	if err := in.natRules.Close(); err != nil {
		in.log.Error("remove the agent's nat rules", "rules", where, "err", err)
		return
	}
	in.log.Info("removed the agent's nat rules", "rules", where)
}

// Serve holds one subscription for as long as its stream lasts: the
// client closing the stream ends it at once, the tunnel dropping ends it
// after its linger time.
func (in *Service) Serve(p *Peer, st *mux.Stream, req proto.Subscribe) {
	defer st.Close()
	sub, err := in.subscribe(p, req)
	if err != nil {
		p.Log.Info("subscription refused", "mode", req.Mode.String(), "port", req.Port, "label", req.Label, "err", err)
		_ = proto.WriteMessage(st, proto.Result{Class: proto.ClassOther, Message: err.Error()})
		return
	}
	if err := proto.WriteMessage(st, proto.Result{}); err != nil {
		in.detach(sub)
		return
	}
	_, err = io.Copy(io.Discard, st)
	if err == nil && !p.Session.IsClosed() {
		in.release(sub) // the client unsubscribed
		return
	}
	// The tunnel is lost (or the agent is shutting down, and removes
	// everything itself).
	in.detach(sub)
}

// DialControl marks the agent's outgoing sockets while it steals, so that
// its own dials to the pod's ports are never redirected back to itself.
func DialControl() func(network, address string, c syscall.RawConn) error {
	return nat.SoftMarkControl
}
