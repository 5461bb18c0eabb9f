package client

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/agent/tunneltls"
)

// DefaultCommunicationTimeout is used when Options.CommunicationTimeout is zero.
const DefaultCommunicationTimeout = 30 * time.Second

// Reconnection backoff: doubling from the first to the cap, each wait
// drawn between half and all of the current step so that many clients
// of one agent do not come back in lockstep.
const (
	firstBackoff = 100 * time.Millisecond
	maxBackoff   = 2 * time.Second
)

// State is the tunnel's state as OnState reports it.
type State int

// The states.
const (
	// StateConnected: a tunnel is up (after a reconnection).
	StateConnected State = iota + 1
	// StateReconnecting: the tunnel was lost; the client is reconnecting.
	StateReconnecting
	// StateClosed: the client was closed; no more events follow.
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Options configure a Client.
type Options struct {
	// Address is the agent's HOST:PORT. Not needed when Dialer is set.
	Address string
	// Token is the shared secret the agent expects. Required.
	Token string
	// Fingerprint, when set, is the agent's key the client pins
	// ("sha256:...", see package tunneltls): the tunnel runs inside TLS
	// 1.3, and the Hello with the token is sent only once the agent has
	// proved it holds that key. Empty: the tunnel is in clear, for a
	// channel that is secure already (a port-forward).
	Fingerprint string
	// Logger receives the client's log; nil discards it.
	Logger *slog.Logger
	// CommunicationTimeout bounds connecting and the handshake, and how
	// long a new flow waits for a lost tunnel to come back.
	CommunicationTimeout time.Duration
	// Dialer, when set, opens the connection to the agent instead of
	// dialing Address (a Kubernetes port-forward, say).
	Dialer func(ctx context.Context) (net.Conn, error)
	// OnState, when set, is called on every state change after Dial has
	// returned, one call at a time. It must not call Close.
	OnState func(State, error)
	// Label names this client to other clients of the agent ("alice@laptop"),
	// so that a refused steal can say who holds the port; "" for DefaultLabel.
	Label string
	// OnIncomingError, when set, hears about a subscription that could not
	// be renewed after a reconnection.
	OnIncomingError func(error)
}

// Client is a tunnel to an agent that reconnects when it drops. It is
// safe for concurrent use.
type Client struct {
	opts Options
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	// closing is set once Close said goodbye: the tunnel ending then is
	// not a loss to reconnect from.
	closing atomic.Bool
	wg      sync.WaitGroup

	// owner tells the agent that a renewed subscription is this client's.
	owner string
	// tls is the pinning TLS configuration, nil without Fingerprint.
	tls *tls.Config

	mu      sync.Mutex
	cur     *tunnel // nil while reconnecting
	facts   proto.Facts
	changed chan struct{} // closed whenever cur changes
	subs    map[uint16]*Subscription
}

// Dial connects to the agent and completes the handshake; it fails with
// ErrTokenRefused (wrapped) when the agent rejects the token. ctx bounds
// the client's whole life: when it ends, the client closes as if Close
// had been called. The first connection is bounded by
// CommunicationTimeout.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.Address == "" && opts.Dialer == nil {
		return nil, errors.New("agent client options: Address is empty: give the agent's HOST:PORT (or a Dialer)")
	}
	if opts.Token == "" {
		return nil, errors.New("agent client options: Token is empty: the agent refuses clients without the shared token")
	}
	var tlsConfig *tls.Config
	if opts.Fingerprint != "" {
		pin, err := tunneltls.ParseFingerprint(opts.Fingerprint)
		if err != nil {
			return nil, fmt.Errorf("agent client options: Fingerprint: %w", err)
		}
		tlsConfig = tunneltls.ClientConfig(pin)
	}
	if opts.CommunicationTimeout < 0 {
		return nil, fmt.Errorf("agent client options: CommunicationTimeout %s is negative: use a positive duration, or zero for %s",
			opts.CommunicationTimeout, DefaultCommunicationTimeout)
	}
	if opts.CommunicationTimeout == 0 {
		opts.CommunicationTimeout = DefaultCommunicationTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Label == "" {
		opts.Label = DefaultLabel()
	}
	var owner [8]byte
	if _, err := crand.Read(owner[:]); err != nil {
		return nil, fmt.Errorf("agent client: random owner id: %w", err)
	}
	c := &Client{opts: opts, log: log, changed: make(chan struct{}), owner: hex.EncodeToString(owner[:]), subs: map[uint16]*Subscription{}, tls: tlsConfig}
	c.ctx, c.cancel = context.WithCancel(ctx)
	t, err := c.connect(c.ctx)
	if err != nil {
		c.cancel()
		c.wg.Wait()
		return nil, err
	}
	c.setTunnel(t)
	c.log.Info("connected to agent", "agent", c.where(), "pod", t.facts.Hostname)
	c.wg.Add(1)
	go c.run(t)
	return c, nil
}

// Close ends the subscriptions (the agent gives their ports back to the
// pod at once), then the tunnel and every flow on it, and waits for the
// client's goroutines to end.
func (c *Client) Close() error {
	if c.ctx.Err() == nil {
		c.closeSubscriptions()
		c.sayGoodbye()
	}
	c.cancel()
	c.wg.Wait()
	return nil
}

// goodbyeWait bounds waiting for the agent to end the tunnel after this
// client's goodbye: a round trip; an agent that does not answer (an old
// one, or a lost tunnel) only costs this much at the end of a run.
const goodbyeWait = 2 * time.Second

// sayGoodbye ends the tunnel the way the agent hears at once: a FIN on the
// control stream, whose end ends the tunnel on the agent, which closes the
// session. Closing the connection alone may reach the agent only much
// later through a port-forward (the API server does not always close the
// pod's side at once), and until then the agent counts this client as
// connected: a shared agent would not retire for the next run.
func (c *Client) sayGoodbye() {
	c.mu.Lock()
	t := c.cur
	c.mu.Unlock()
	if t == nil {
		return
	}
	c.closing.Store(true)
	_ = t.ctrlStream.Close()
	select {
	case <-t.sess.CloseChan():
	case <-time.After(goodbyeWait):
	}
}

// Facts describes the pod, as its agent last reported it, without what
// would be unsafe to write into the sandbox's resolver files (see
// sanitizeFacts).
func (c *Client) Facts() Facts {
	c.mu.Lock()
	f := c.facts
	c.mu.Unlock()
	return Facts{
		Hostname:      f.Hostname,
		Addresses:     slices.Clone(f.Addresses),
		SearchDomains: slices.Clone(f.SearchDomains),
		Ndots:         f.Ndots,
		Options:       slices.Clone(f.Options),
	}
}

func (c *Client) where() string {
	if c.opts.Address != "" {
		return c.opts.Address
	}
	return "(custom dialer)"
}

func (c *Client) emit(s State, err error) {
	if c.opts.OnState != nil {
		c.opts.OnState(s, err)
	}
}

func (c *Client) setTunnel(t *tunnel) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = t
	if t != nil {
		// Once per tunnel, not per Facts call: the sandbox asks several
		// times, and what is dropped is logged once.
		safe, dropped := sanitizeFacts(t.facts)
		if len(dropped) > 0 {
			c.log.Warn("ignored pod facts the agent reported that are not valid", "dropped", dropped)
		}
		c.facts = safe
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// run watches the tunnel and replaces it when it drops, until the client
// is closed.
func (c *Client) run(t *tunnel) {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			_ = t.sess.Close()
			c.setTunnel(nil)
			c.emit(StateClosed, nil)
			return
		case <-t.sess.CloseChan():
		}
		c.setTunnel(nil)
		if c.closing.Load() {
			// The agent ended the tunnel after this client's goodbye.
			<-c.ctx.Done()
			c.emit(StateClosed, nil)
			return
		}
		lost := fmt.Errorf("tunnel to agent at %s closed", c.where())
		c.log.Warn("agent connection lost, reconnecting", "agent", c.where())
		c.emit(StateReconnecting, lost)
		if t = c.reconnect(); t == nil {
			c.setTunnel(nil)
			c.emit(StateClosed, nil)
			return
		}
		c.setTunnel(t)
		c.log.Info("reconnected to agent", "agent", c.where())
		c.emit(StateConnected, nil)
		c.renewAll()
	}
}

// reconnect retries until it has a tunnel or the client is closed (nil).
func (c *Client) reconnect() *tunnel {
	step := firstBackoff
	warned := false
	for attempt := 1; ; attempt++ {
		t, err := c.connect(c.ctx)
		if err == nil {
			return t
		}
		if c.ctx.Err() != nil {
			return nil
		}
		if (errors.Is(err, ErrTokenRefused) || errors.Is(err, ErrFingerprintMismatch)) && !warned {
			// A new agent with another token or key: say so once, keep
			// trying (nothing is sent to an agent with another key).
			c.log.Warn("reconnect to agent", "attempt", attempt, "err", err)
			warned = true
		} else {
			c.log.Debug("reconnect to agent", "attempt", attempt, "err", err)
		}
		wait := step/2 + rand.N(step/2+1)
		step = min(step*2, maxBackoff)
		timer := time.NewTimer(wait)
		select {
		case <-c.ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
}

// connect opens a connection, shakes hands on it, then starts yamux and
// opens the control stream.
func (c *Client) connect(ctx context.Context) (*tunnel, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.CommunicationTimeout)
	defer cancel()
	raw, err := c.dialAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to agent at %s: %w", c.where(), err)
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	conn, err := c.secure(ctx, raw)
	var facts proto.Facts
	if err == nil {
		facts, err = c.handshake(conn)
	}
	if !stop() {
		_ = raw.Close()
		return nil, fmt.Errorf("handshake with agent at %s: %w", c.where(), ctx.Err())
	}
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	sess, err := proto.ClientSession(conn, c.log)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("start tunnel session with agent at %s: %w", c.where(), err)
	}
	// The first stream is the control stream.
	ctrl, err := sess.OpenStream()
	if err != nil {
		_ = sess.Close()
		return nil, fmt.Errorf("open control stream to agent at %s: %w", c.where(), err)
	}
	t := &tunnel{sess: sess, ctrl: proto.NewControl(ctrl), ctrlStream: ctrl, facts: facts, dnsReady: make(chan struct{})}
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		t.readControl()
	}()
	go func() {
		defer c.wg.Done()
		c.acceptIncoming(t)
	}()
	go func() {
		defer c.wg.Done()
		c.runDNSStream(t)
	}()
	return t, nil
}

func (c *Client) dialAgent(ctx context.Context) (net.Conn, error) {
	if c.opts.Dialer != nil {
		return c.opts.Dialer(ctx)
	}
	d := net.Dialer{KeepAlive: 15 * time.Second}
	return d.DialContext(ctx, "tcp", c.opts.Address)
}

// handshake sends Hello on the bare connection and reads the answer;
// yamux starts only after Welcome (protocol version 3).
func (c *Client) handshake(conn net.Conn) (proto.Facts, error) {
	if err := proto.WriteMessage(conn, proto.Hello{Version: proto.Version, Token: c.opts.Token}); err != nil {
		return proto.Facts{}, fmt.Errorf("greet agent at %s: %w", c.where(), err)
	}
	m, err := proto.ReadMessage(conn)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return proto.Facts{}, fmt.Errorf("agent at %s hung up on the Hello (an agent older than protocol version %d does: upgrade it): %w",
			c.where(), proto.Version, err)
	}
	if err != nil {
		return proto.Facts{}, fmt.Errorf("read the agent's answer to Hello from %s: %w", c.where(), err)
	}
	switch m := m.(type) {
	case proto.Welcome:
		if m.Version != proto.Version {
			return proto.Facts{}, fmt.Errorf("agent at %s speaks protocol version %d, this client %d", c.where(), m.Version, proto.Version)
		}
		return m.Facts, nil
	case proto.Refused:
		if m.Code == proto.RefuseToken {
			return proto.Facts{}, fmt.Errorf("connect to agent at %s: %w (%s): check --agent-token-file or %s",
				c.where(), ErrTokenRefused, m.Reason, "TRAFFICPOLICE_AGENT_TOKEN")
		}
		if m.Code == proto.RefuseRetiring {
			return proto.Facts{}, fmt.Errorf("agent at %s: %w (%s)", c.where(), ErrAgentRetiring, m.Reason)
		}
		return proto.Facts{}, fmt.Errorf("agent at %s refused the tunnel: %s", c.where(), m.Reason)
	}
	return proto.Facts{}, fmt.Errorf("agent at %s answered Hello with %s", c.where(), m.Type())
}

// tunnelFor returns the current tunnel, waiting for one while the client
// reconnects, until giveUp.
func (c *Client) tunnelFor(ctx context.Context, giveUp time.Time) (*tunnel, error) {
	var timeout <-chan time.Time
	for {
		c.mu.Lock()
		t, changed := c.cur, c.changed
		c.mu.Unlock()
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if t != nil && !t.sess.IsClosed() {
			return t, nil
		}
		if timeout == nil {
			timer := time.NewTimer(time.Until(giveUp))
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctxError(ctx)
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-timeout:
			return nil, fmt.Errorf("%w: no tunnel to %s for %s: %w", ErrAgentUnavailable, c.where(), c.opts.CommunicationTimeout, syscall.EHOSTUNREACH)
		}
	}
}

// ctxError is ctx's error, wrapping os.ErrDeadlineExceeded for a deadline
// so the router answers it like a socket timeout.
func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer from the agent in time: %w (%w)", os.ErrDeadlineExceeded, ctx.Err())
	}
	return ctx.Err()
}

// request opens a stream, sends req and reads the Result. On success the
// stream is left open for the flow's payload. onOpen, when set, sees the
// stream before the request goes out (to register it for Abort).
func (c *Client) request(ctx context.Context, req proto.Message, onOpen func(*tunnel, *mux.Stream)) (*mux.Stream, *tunnel, proto.Result, error) {
	giveUp := time.Now().Add(c.opts.CommunicationTimeout)
	for {
		t, err := c.tunnelFor(ctx, giveUp)
		if err != nil {
			return nil, nil, proto.Result{}, err
		}
		st, err := t.sess.OpenStream()
		if err != nil {
			if t.sess.IsClosed() {
				continue // lost it just now: wait for the next one
			}
			return nil, nil, proto.Result{}, fmt.Errorf("open stream to agent: %w", err)
		}
		if onOpen != nil {
			onOpen(t, st)
		}
		res, err := exchange(ctx, st, req)
		if err != nil {
			_ = st.Close()
			if _, isTCP := req.(proto.DialTCP); isTCP {
				t.remove(st.StreamID())
				t.sendAbort(st.StreamID()) // the agent may be dialing still
			}
			if ctx.Err() == nil && tunnelDying(t) {
				continue // the tunnel broke under the request: retry on the next one
			}
			return nil, nil, proto.Result{}, err
		}
		return st, t, res, nil
	}
}

// tunnelDying reports whether t's session is closing: a stream error it
// caused may be seen a moment before the session says it is closed.
func tunnelDying(t *tunnel) bool {
	select {
	case <-t.sess.CloseChan():
		return true
	case <-time.After(time.Second):
		return false
	}
}

func exchange(ctx context.Context, st *mux.Stream, req proto.Message) (proto.Result, error) {
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Now()) })
	werr := proto.WriteMessage(st, req)
	var m proto.Message
	if werr == nil {
		m, werr = proto.ReadMessage(st)
	}
	if !stop() {
		return proto.Result{}, ctxError(ctx)
	}
	if werr != nil {
		return proto.Result{}, fmt.Errorf("%s through the agent's tunnel: %w", req.Type(), streamError("dial", "tunnel", nil, nil, werr))
	}
	res, ok := m.(proto.Result)
	if !ok {
		return proto.Result{}, fmt.Errorf("agent answered %s with %s, want Result", req.Type(), m.Type())
	}
	return res, nil
}

// timeoutFor is the time left before ctx's deadline, for the agent to bound
// its own work by; zero when ctx has none.
func timeoutFor(ctx context.Context) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return max(time.Until(dl), time.Millisecond)
}

// DialTCP opens a TCP connection from the pod to dst. A failure the agent
// reports is a *RemoteError that unwraps to the errno the app would see.
func (c *Client) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	var conn *tcpConn
	// Registered before the request: the agent's Abort for a peer that
	// resets at once may come right behind the Result.
	register := func(t *tunnel, st *mux.Stream) {
		conn = &tcpConn{st: st, t: t, remote: net.TCPAddrFromAddrPort(dst)}
		t.add(st.StreamID(), conn)
	}
	st, t, res, err := c.request(ctx, proto.DialTCP{Timeout: timeoutFor(ctx), Dst: dst}, register)
	if err != nil {
		return nil, err
	}
	if res.Class != proto.ClassOK {
		t.remove(st.StreamID())
		_ = st.Close()
		return nil, &RemoteError{Class: res.Class, Message: res.Message}
	}
	conn.start()
	return conn, nil
}

// DialUDP opens a UDP flow from the pod to dst; the returned conn keeps
// datagram boundaries.
func (c *Client) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	st, t, res, err := c.request(ctx, proto.DialUDP{Timeout: timeoutFor(ctx), Dst: dst}, nil)
	if err != nil {
		return nil, err
	}
	if res.Class != proto.ClassOK {
		_ = st.Close()
		return nil, &RemoteError{Class: res.Class, Message: res.Message}
	}
	return &udpConn{st: st, t: t, remote: net.UDPAddrFromAddrPort(dst)}, nil
}

// Exchange resolves one raw DNS query with the pod's resolver settings
// and returns the raw answer. Queries share the tunnel's DNS stream, many
// in flight at once; with an agent that predates it, each takes a stream
// of its own.
func (c *Client) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	giveUp := time.Now().Add(c.opts.CommunicationTimeout)
	for {
		t, err := c.tunnelFor(ctx, giveUp)
		if err != nil {
			return nil, err
		}
		s, err := t.dnsStream(ctx)
		if err != nil {
			return nil, err
		}
		if s == nil {
			return c.exchangeOnItsOwnStream(ctx, query)
		}
		a, err := s.exchange(ctx, query)
		if errors.Is(err, errDNSStreamEnded) && ctx.Err() == nil {
			// Asked again (DNS queries may be): on the next tunnel's DNS
			// stream, or on a stream of its own when only the DNS
			// stream broke.
			if tunnelDying(t) {
				continue
			}
			return c.exchangeOnItsOwnStream(ctx, query)
		}
		if err != nil {
			return nil, err
		}
		if a.Class != proto.ClassOK {
			return nil, &RemoteError{Class: a.Class, Message: a.Message}
		}
		return a.Answer, nil
	}
}

// exchangeOnItsOwnStream resolves one query on a DNS stream of its own,
// for an agent that predates DNSStream.
func (c *Client) exchangeOnItsOwnStream(ctx context.Context, query []byte) ([]byte, error) {
	st, _, res, err := c.request(ctx, proto.DNS{Timeout: timeoutFor(ctx), Query: query}, nil)
	if err != nil {
		return nil, err
	}
	_ = st.Close()
	if res.Class != proto.ClassOK {
		return nil, &RemoteError{Class: res.Class, Message: res.Message}
	}
	return res.Data, nil
}

// Ping measures one round trip through the tunnel and the agent.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	st, _, res, err := c.request(ctx, proto.Ping{}, nil)
	if err != nil {
		return 0, err
	}
	_ = st.Close()
	if res.Class != proto.ClassOK {
		return 0, &RemoteError{Class: res.Class, Message: res.Message}
	}
	return time.Since(start), nil
}
