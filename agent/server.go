package agent

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/incoming"
	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/agent/tunneltls"
)

// Defaults for the zero values of Options.
const (
	DefaultResolvConfPath       = "/etc/resolv.conf"
	DefaultHostsPath            = "/etc/hosts"
	DefaultCommunicationTimeout = 30 * time.Second
	DefaultDialTimeout          = 30 * time.Second
	DefaultUDPIdleTimeout       = 2 * time.Minute
	// DefaultMaxUDPFlows caps a tunnel's UDP flows: each holds a socket,
	// two goroutines and two datagram buffers (128 KiB) until it ends or
	// idles out, so an app (or peer) that opens flows faster than they
	// expire would otherwise grow the agent without bound. 1024 is far
	// above what an app has open at once; past it, DialUDP is refused.
	DefaultMaxUDPFlows = 1024
	// DefaultHandshakeTimeout bounds how long a new connection may take to
	// send its Hello. A client sends it at once (a few hundred bytes, even
	// over a port-forward), so a few seconds is plenty; it is short, and
	// apart from CommunicationTimeout, because until then the peer is
	// nobody and holds one of the MaxPendingHandshakes places.
	DefaultHandshakeTimeout = 5 * time.Second
	// MaxPendingHandshakes is how many connections may wait for their
	// Hello at once; beyond that, new connections are closed at once.
	MaxPendingHandshakes = 64
)

// Backoff of the accept loop when the process is out of descriptors or
// memory: as net/http does, doubling up to a second.
const (
	firstAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff   = time.Second
)

// Options configure an agent.
type Options struct {
	// ListenAddress is the HOST:PORT Serve listens on.
	ListenAddress string
	// Token is the shared secret every client must present. Required.
	Token string
	// TLSKey, when set, makes the agent serve TLS 1.3 only, with a
	// self-signed certificate for this key (see package tunneltls):
	// clients pin its fingerprint, and their Hello travels inside TLS.
	// Without it the agent speaks in clear, for a channel that is secure
	// already (the API server's port-forward, a tunnel of one's own).
	TLSKey crypto.Signer
	// ResolvConfPath and HostsPath are the pod's resolver files; tests
	// point them at their own.
	ResolvConfPath string
	HostsPath      string
	// CommunicationTimeout bounds reading a request and a DNS resolution.
	CommunicationTimeout time.Duration
	// HandshakeTimeout bounds a new connection's Hello; zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// DialTimeout bounds a TCP dial from the pod; a client may ask for less.
	DialTimeout time.Duration
	// UDPIdleTimeout ends a UDP flow with no datagram either way for that long.
	UDPIdleTimeout time.Duration
	// MaxUDPFlows is how many UDP flows one tunnel may have open at once;
	// zero means DefaultMaxUDPFlows.
	MaxUDPFlows int
	// Logger receives the agent's log; nil means slog.Default().
	Logger *slog.Logger
	// Incoming enables steal and mirror: Serve installs nat rules in the
	// agent's network namespace (chains named for the agent, removed when
	// Serve returns). The command turns it on; a program that embeds the
	// agent in a namespace it shares with others must leave it off.
	Incoming bool
	// NATBackend writes those rules: nat.Auto ("" too), nat.IPTables or
	// nat.NFTables.
	NATBackend nat.Backend
	// TargetPID is the process whose environment an Env request returns;
	// zero means the oldest process the agent sees besides itself and its
	// ancestors (the target's first process, in an ephemeral container
	// sharing the target container's PID namespace).
	TargetPID int
	// ProcRoot is where the processes are listed; "" means /proc.
	ProcRoot string
	// Retirable lets a client that is the only one connected ask the
	// agent to leave with it (Retire): an agent started for runs, which
	// several runs on one target pod share. A standing agent (started
	// by hand, --agent-address) never retires.
	Retirable bool
}

// Server serves tunnels. It is safe to serve several listeners with one
// Server.
type Server struct {
	opts Options
	log  *slog.Logger
	dns  *dnsResolver

	// incoming is the steal and mirror machinery, nil when it is off or
	// could not be set up (incomingErr says why).
	incoming     *incoming.Service
	incomingErr  string
	incomingOnce sync.Once

	// pending holds a place for each connection that has not yet
	// presented a good token (MaxPendingHandshakes of them).
	pending chan struct{}
	// udpFlows counts the UDP flows open on all tunnels.
	udpFlows atomic.Int64

	// tls is the TLS configuration when opts.TLSKey is set, with the
	// key's fingerprint; nil for an agent that speaks in clear.
	tls         *tls.Config
	fingerprint tunneltls.Fingerprint
	// clients counts connected tunnels, for Retire.
	clients *clients
}

// New checks opts and fills in the defaults.
func New(opts Options) (*Server, error) {
	if opts.Token == "" {
		return nil, fmt.Errorf("agent options: Token is empty: the agent refuses to run without a shared token (--token-file or %s)", proto.EnvToken)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"CommunicationTimeout", &opts.CommunicationTimeout, DefaultCommunicationTimeout},
		{"HandshakeTimeout", &opts.HandshakeTimeout, DefaultHandshakeTimeout},
		{"DialTimeout", &opts.DialTimeout, DefaultDialTimeout},
		{"UDPIdleTimeout", &opts.UDPIdleTimeout, DefaultUDPIdleTimeout},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("agent options: %s %s is negative: use a positive duration, or zero for the default %s", d.name, *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	backend, err := nat.ParseBackend(string(opts.NATBackend))
	if err != nil {
		return nil, fmt.Errorf("agent options: NATBackend: %w", err)
	}
	opts.NATBackend = backend
	if opts.ResolvConfPath == "" {
		opts.ResolvConfPath = DefaultResolvConfPath
	}
	if opts.HostsPath == "" {
		opts.HostsPath = DefaultHostsPath
	}
	if opts.MaxUDPFlows < 0 {
		return nil, fmt.Errorf("agent options: MaxUDPFlows %d is negative: give a positive number, or zero for the default %d", opts.MaxUDPFlows, DefaultMaxUDPFlows)
	}
	if opts.MaxUDPFlows == 0 {
		opts.MaxUDPFlows = DefaultMaxUDPFlows
	}
	if opts.TargetPID < 0 {
		return nil, fmt.Errorf("agent options: TargetPID %d is negative: give a process id, or zero for the oldest other process", opts.TargetPID)
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		opts:    opts,
		log:     log,
		dns:     &dnsResolver{resolvConf: &resolvConfFile{path: opts.ResolvConfPath}, hosts: &hostsFile{path: opts.HostsPath}},
		pending: make(chan struct{}, MaxPendingHandshakes),
		clients: newClients(),
	}
	if opts.TLSKey != nil {
		if s.tls, s.fingerprint, err = tunneltls.ServerConfig(opts.TLSKey); err != nil {
			return nil, fmt.Errorf("agent options: TLSKey: %w", err)
		}
	}
	return s, nil
}

// Fingerprint is the fingerprint of the agent's TLS key, for clients to
// pin; ok is false for an agent without TLS.
func (s *Server) Fingerprint() (fp tunneltls.Fingerprint, ok bool) {
	return s.fingerprint, s.tls != nil
}

// LogListening logs that the agent listens on addr and, with TLS, the
// fingerprint clients pin; without, a warning on any address but
// loopback that the tunnel is in clear. attrs are logged too.
func (s *Server) LogListening(addr net.Addr, attrs ...any) {
	if fp, ok := s.Fingerprint(); ok {
		s.log.Info("agent listening", append([]any{"address", addr.String(), "tls", "1.3", "fingerprint", fp.String()}, attrs...)...)
		return
	}
	s.log.Info("agent listening", append([]any{"address", addr.String(), "tls", "off"}, attrs...)...)
	if ta, ok := addr.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		s.log.Warn("serving without TLS: the tunnel is in clear and the agent cannot prove who it is; " +
			"fine behind a port-forward or a tunnel of your own, else give --tls-key FILE")
	}
}

// Serve listens on opts.ListenAddress and serves tunnels until ctx ends.
// It is what `trafficpolice agent` runs.
func Serve(ctx context.Context, opts Options) error {
	s, err := New(opts)
	if err != nil {
		return err
	}
	if opts.ListenAddress == "" {
		return errors.New("agent options: ListenAddress is empty: give HOST:PORT, e.g. 0.0.0.0:7777")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", opts.ListenAddress)
	if err != nil {
		return fmt.Errorf("agent listen on %s: %w", opts.ListenAddress, err)
	}
	s.LogListening(ln.Addr())
	return s.Serve(ctx, ln)
}

// Serve accepts clients on ln until ctx ends, then closes ln and every
// tunnel and returns nil once all of them are gone. It returns an error
// only when ln fails for another reason.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Incoming traffic lives with the first Serve; a concurrent Serve
	// waits here until it is set up.
	stopIncoming := func() {}
	s.incomingOnce.Do(func() {
		if s.opts.Incoming {
			stopIncoming = s.startIncoming(ctx, ln.Addr(), &wg)
		} else {
			s.incomingErr = "this agent was started without incoming traffic (steal and mirror)"
		}
	})
	// Deferred after wg.Wait, so it runs first: the pod gets its ports
	// back at once, without waiting for the tunnels to end.
	defer stopIncoming()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	// A retired agent ends once its last client has left.
	go func() {
		select {
		case <-s.clients.gone:
			s.log.Info("retired and the last client left: exiting")
			cancel()
		case <-ctx.Done():
		}
	}()
	backoff := time.Duration(0)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if outOfResources(err) {
				// Out of descriptors or memory: wait for flows to end
				// rather than give up on every client.
				backoff = min(max(2*backoff, firstAcceptBackoff), maxAcceptBackoff)
				s.log.Warn("accept failed, retrying", "err", err, "in", backoff)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(backoff):
				}
				continue
			}
			_ = ln.Close()
			return fmt.Errorf("agent accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		select {
		case s.pending <- struct{}{}:
		default:
			// Too many peers that have not said who they are: this one
			// gets nothing, not even a goroutine.
			s.log.Debug("too many connections waiting for their Hello: closing a new one", "client", c.RemoteAddr().String(), "max", MaxPendingHandshakes)
			_ = c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

// outOfResources reports an Accept error that passes once some
// connections end: out of file descriptors (the process's or the
// system's), of socket buffers or of memory.
func outOfResources(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// serveConn runs one client's tunnel: the handshake on the bare
// connection, then yamux and one goroutine per stream, until the tunnel or
// ctx ends. Everything the client opened is closed before it returns. It
// holds a place in s.pending until the handshake is over.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	log := s.log.With("client", c.RemoteAddr().String())
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopClose := context.AfterFunc(ctx, func() { _ = c.Close() })
	conn, err := s.handshake(ctx, c, log)
	<-s.pending
	if err != nil {
		log.Warn("tunnel handshake failed", "err", err)
		_ = c.Close()
		return
	}
	defer s.clients.leave() // handshake counted the client
	stopClose()
	// Only now, for a client that presented the token, does yamux get
	// its windows and backlog.
	sess, err := proto.ServerSession(conn, log)
	if err != nil {
		log.Error("start tunnel session", "err", err)
		_ = c.Close()
		return
	}
	context.AfterFunc(ctx, func() { _ = sess.Close() })
	actx, acancel := context.WithTimeout(ctx, s.opts.CommunicationTimeout)
	ctrl, err := sess.AcceptStreamWithContext(actx)
	acancel()
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("the client opened no control stream", "err", err)
		}
		return
	}
	t := newTunnel(log, sess, ctrl)
	s.clients.attach(t)
	defer s.clients.detach(t)
	log.Info("client connected")

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel() // the control stream ending ends the tunnel
		if err := t.ctrl.Run(); err != nil && !errors.Is(err, io.EOF) && !sess.IsClosed() {
			log.Warn("control stream ended, closing the tunnel", "err", err)
		}
	}()
	for {
		st, err := sess.AcceptStreamWithContext(ctx)
		if err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveStream(ctx, t, st)
		}()
	}
	cancel()
	wg.Wait()
	log.Info("client disconnected, its flows are closed")
}

// handshake shakes hands within HandshakeTimeout: TLS first when the
// agent has a key, then it reads Hello and answers Welcome or Refused. It
// returns the connection the tunnel runs on (the TLS one, or c). Until the
// token checks out, the agent holds no more for the peer than the TLS
// handshake's messages and the Hello's bytes (MaxHelloSize).
func (s *Server) handshake(ctx context.Context, c net.Conn, log *slog.Logger) (net.Conn, error) {
	_ = c.SetDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	conn, err := s.secure(ctx, c)
	if err != nil {
		return nil, err
	}
	hello, err := proto.ReadHello(conn)
	if err != nil {
		return nil, err
	}
	if hello.Version != proto.Version {
		reason := fmt.Sprintf("protocol version %d is not supported: this agent speaks version %d", hello.Version, proto.Version)
		s.refuse(conn, proto.Refused{Code: proto.RefuseVersion, Reason: reason})
		return nil, errors.New(reason)
	}
	if !s.tokenOK(hello.Token) {
		log.Warn("refused a client: wrong or missing token", "remote", c.RemoteAddr().String(), "token_given", hello.Token != "")
		s.refuse(conn, proto.Refused{Code: proto.RefuseToken, Reason: "wrong or missing token"})
		return nil, errors.New("client presented a wrong or missing token")
	}
	facts, err := podFacts(s.opts.ResolvConfPath)
	if err != nil {
		// The tunnel still works; the sandbox just copies less from the pod.
		log.Warn("could not read all pod facts", "err", err)
	}
	facts.IncomingError = s.incomingErr
	if !s.clients.join() {
		s.refuse(conn, proto.Refused{Code: proto.RefuseRetiring, Reason: "this agent is leaving with its last client and takes no new one"})
		return nil, errors.New("refused a client: the agent is retiring")
	}
	if err := proto.WriteMessage(conn, proto.Welcome{Version: proto.Version, Facts: facts}); err != nil {
		s.clients.leave()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return conn, nil
}

// tokenOK compares in constant time; hashing first keeps the token's
// length from showing in the timing too.
func (s *Server) tokenOK(given string) bool {
	a := sha256.Sum256([]byte(given))
	b := sha256.Sum256([]byte(s.opts.Token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// refuse sends the refusal; the caller closes the connection. The client
// has nothing unread on it (it waits for the answer to its Hello), so the
// close is a FIN that lets it read the refusal, not a reset.
func (s *Server) refuse(c io.Writer, r proto.Refused) {
	_ = proto.WriteMessage(c, r)
}

// serveStream reads a flow's request and hands it to its handler.
func (s *Server) serveStream(ctx context.Context, t *tunnel, st *mux.Stream) {
	_ = st.SetReadDeadline(time.Now().Add(s.opts.CommunicationTimeout))
	m, err := proto.ReadMessage(st)
	if err != nil {
		t.log.Debug("read flow request", "stream", st.StreamID(), "err", err)
		_ = st.Close()
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	switch req := m.(type) {
	case proto.DialTCP:
		s.serveTCP(ctx, t, st, req)
	case proto.DialUDP:
		s.serveUDP(ctx, t, st, req)
	case proto.DNS:
		s.serveDNS(ctx, t, st, req)
	case proto.DNSStream:
		s.serveDNSStream(ctx, t, st)
	case proto.Ping:
		_ = proto.WriteMessage(st, proto.Result{})
		_ = st.Close()
	case proto.Subscribe:
		if s.incoming == nil {
			_ = proto.WriteMessage(st, proto.Result{Class: proto.ClassOther,
				Message: "the agent cannot steal or mirror: " + s.incomingErr})
			_ = st.Close()
			return
		}
		s.incoming.Serve(t.peer, st, req)
	case proto.Env:
		s.serveEnv(t, st)
	case proto.Retire:
		s.serveRetire(t, st)
	default:
		_ = proto.WriteMessage(st, proto.Result{Class: proto.ClassOther,
			Message: fmt.Sprintf("%s cannot start a flow: send DialTCP, DialUDP, DNS, DNSStream, Ping, Subscribe, Env or Retire", m.Type())})
		_ = st.Close()
	}
}

func (s *Server) serveDNS(ctx context.Context, t *tunnel, st *mux.Stream, req proto.DNS) {
	defer st.Close()
	ctx, cancel := context.WithTimeout(ctx, limit(req.Timeout, s.opts.CommunicationTimeout))
	defer cancel()
	answer, err := s.dns.resolve(ctx, req.Query)
	res := proto.Result{Data: answer}
	if err != nil {
		t.log.Debug("DNS query failed", "err", err)
		res = failure(err)
	}
	_ = proto.WriteMessage(st, res)
}

// limit is the client's timeout when it asked for one shorter than ours.
func limit(asked, ours time.Duration) time.Duration {
	if asked > 0 && asked < ours {
		return asked
	}
	return ours
}

// startIncoming sets up steal and mirror next to the tunnel listener at
// tunnelAddr (whose port is never stolen), and returns what undoes it.
// When it cannot, the agent still serves outgoing traffic and tells every
// client why.
func (s *Server) startIncoming(ctx context.Context, tunnelAddr net.Addr, wg *sync.WaitGroup) func() {
	reserved := map[uint16]string{}
	if ta, ok := tunnelAddr.(*net.TCPAddr); ok {
		reserved[uint16(ta.Port)] = "the agent's own tunnel port"
	}
	in, err := incoming.Start(ctx, incoming.Options{
		Log:         s.log,
		Backend:     s.opts.NATBackend,
		Linger:      s.opts.CommunicationTimeout,
		OpenTimeout: s.opts.CommunicationTimeout,
		DialTimeout: s.opts.DialTimeout,
		Reserved:    reserved,
	}, wg)
	if err != nil {
		s.incomingErr = err.Error()
		s.log.Warn("incoming traffic (steal, mirror) is not available", "err", err)
		return func() {}
	}
	s.incoming = in
	return in.Close
}

// dialControl marks the agent's outgoing sockets while it steals, so that
// its own dials to the pod's ports are never redirected back to itself.
func (s *Server) dialControl() func(network, address string, c syscall.RawConn) error {
	if s.incoming == nil {
		return nil
	}
	return incoming.DialControl()
}
