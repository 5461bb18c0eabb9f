package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/user"
	"sync"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/splice"
)

// Mode is what a subscription does with a pod port's traffic.
type Mode = proto.IncomingMode

// The modes.
const (
	// Steal: connections (or matching HTTP requests) come to the local app
	// instead of the pod's.
	Steal = proto.ModeSteal
	// Mirror: the pod's app answers as before; the local app gets a copy
	// and its answers are dropped.
	Mirror = proto.ModeMirror
)

// IncomingConn describes a connection the agent hands over.
type IncomingConn struct {
	Mode Mode
	// Port is the subscribed pod port.
	Port uint16
	// Src is the connection's peer; Dst where it was going in the pod.
	Src, Dst netip.AddrPort
}

// SubscribeOptions say what to take from the pod and where it goes.
type SubscribeOptions struct {
	Mode Mode
	// Port is the pod's port.
	Port uint16
	// Filter selects HTTP requests; the zero value takes whole
	// connections. Its Ports are not looked at: the caller picks the
	// ports that get the filter.
	Filter config.HTTPFilter
	// Dial connects to the local app for one incoming connection. The
	// client copies the bytes both ways (for Mirror it drops the app's).
	Dial func(ctx context.Context, in IncomingConn) (net.Conn, error)
}

// Subscription is a steal or mirror of one pod port. The client renews it
// on every new tunnel after a reconnection.
type Subscription struct {
	c    *Client
	opts SubscribeOptions

	mu     sync.Mutex
	st     *mux.Stream // on the current tunnel; nil while renewing
	closed bool
}

// DefaultLabel names this client for other people: the user (the one who
// ran sudo, if any) at this host.
func DefaultLabel() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	host, _ := os.Hostname()
	if name == "" {
		return host
	}
	return name + "@" + host
}

// IncomingError is the reason the agent cannot steal or mirror, empty when
// it can.
func (c *Client) IncomingError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.facts.IncomingError
}

// Subscribe asks the agent to steal or mirror a port of the pod. It fails
// when the agent refuses: another client steals the port whole (the error
// names them), the filter is invalid, or the agent cannot set up its nat
// rules.
func (c *Client) Subscribe(ctx context.Context, o SubscribeOptions) (*Subscription, error) {
	if o.Mode != Steal && o.Mode != Mirror {
		return nil, fmt.Errorf("subscribe: mode %d is invalid: want Steal or Mirror", o.Mode)
	}
	if o.Port == 0 {
		return nil, errors.New("subscribe: port 0 is invalid: want the pod's port, 1-65535")
	}
	if o.Dial == nil {
		return nil, errors.New("subscribe: Dial is nil: give the function that reaches the local app")
	}
	s := &Subscription{c: c, opts: o}
	c.mu.Lock()
	if _, dup := c.subs[o.Port]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("subscribe: pod port %d is already subscribed by this client", o.Port)
	}
	c.subs[o.Port] = s
	c.mu.Unlock()
	if err := s.renew(ctx); err != nil {
		c.mu.Lock()
		delete(c.subs, o.Port)
		c.mu.Unlock()
		return nil, err
	}
	return s, nil
}

// renew sends the Subscribe request on the current tunnel.
func (s *Subscription) renew(ctx context.Context) error {
	c := s.c
	req := proto.Subscribe{Mode: s.opts.Mode, Port: s.opts.Port, Linger: c.opts.CommunicationTimeout,
		Owner: c.owner, Label: c.opts.Label, Filter: wireFilter(s.opts.Filter)}
	st, _, res, err := c.request(ctx, req, nil)
	if err != nil {
		return fmt.Errorf("%s pod port %d: %w", s.opts.Mode, s.opts.Port, err)
	}
	if res.Class != proto.ClassOK {
		_ = st.Close()
		return fmt.Errorf("%s pod port %d: the agent refused: %s", s.opts.Mode, s.opts.Port, res.Message)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		closeAndWait(st)
		return ErrClosed
	}
	old := s.st
	s.st = st
	s.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// Close ends the subscription and waits (briefly) for the agent to give
// the port back to the pod's app.
func (s *Subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	st := s.st
	s.st = nil
	s.mu.Unlock()
	s.c.mu.Lock()
	if s.c.subs[s.opts.Port] == s {
		delete(s.c.subs, s.opts.Port)
	}
	s.c.mu.Unlock()
	if st != nil {
		closeAndWait(st)
	}
	return nil
}

// closeAndWait sends our FIN and waits for the agent's, which comes once
// it has removed the subscription.
func closeAndWait(st *mux.Stream) {
	_ = st.Close()
	_ = st.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.Copy(io.Discard, st)
}

// renewAll subscribes again on a new tunnel.
func (c *Client) renewAll() {
	c.mu.Lock()
	subs := make([]*Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	for _, s := range subs {
		s.mu.Lock()
		s.st = nil
		closed := s.closed
		s.mu.Unlock()
		if closed {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.CommunicationTimeout)
		err := s.renew(ctx)
		cancel()
		if err != nil && !errors.Is(err, ErrClosed) {
			c.log.Warn("renew a subscription after reconnecting", "mode", s.opts.Mode.String(), "port", s.opts.Port, "err", err)
			if c.opts.OnIncomingError != nil {
				c.opts.OnIncomingError(err)
			}
		}
	}
}

// closeSubscriptions ends every subscription before the tunnel goes.
func (c *Client) closeSubscriptions() {
	c.mu.Lock()
	subs := make([]*Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Close()
		}()
	}
	wg.Wait()
}

// acceptIncoming takes the streams the agent opens, one per incoming
// connection, until the tunnel ends.
func (c *Client) acceptIncoming(t *tunnel) {
	for {
		st, err := t.sess.AcceptStream()
		if err != nil {
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.serveIncoming(st)
		}()
	}
}

func (c *Client) serveIncoming(st *mux.Stream) {
	defer st.Close()
	_ = st.SetReadDeadline(time.Now().Add(c.opts.CommunicationTimeout))
	m, err := proto.ReadMessage(st)
	if err != nil {
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	in, ok := m.(proto.Incoming)
	if !ok {
		_ = proto.WriteMessage(st, proto.Result{Class: proto.ClassOther, Message: fmt.Sprintf("the client takes only Incoming on streams the agent opens, not %s", m.Type())})
		return
	}
	c.mu.Lock()
	s := c.subs[in.Port]
	c.mu.Unlock()
	if s == nil || s.opts.Mode != in.Mode {
		_ = proto.WriteMessage(st, proto.Result{Class: proto.ClassRefused, Message: fmt.Sprintf("this client has no %s subscription of port %d", in.Mode, in.Port)})
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.CommunicationTimeout)
	conn, err := s.opts.Dial(ctx, IncomingConn{Mode: in.Mode, Port: in.Port, Src: in.Src, Dst: in.Dst})
	cancel()
	if err != nil {
		class := proto.ClassOther
		if errors.Is(err, syscall.ECONNREFUSED) {
			class = proto.ClassRefused
		}
		c.log.Info("incoming connection: the local app cannot be reached", "port", in.Port, "err", err)
		_ = proto.WriteMessage(st, proto.Result{Class: class, Message: err.Error()})
		return
	}
	defer conn.Close()
	if err := proto.WriteMessage(st, proto.Result{}); err != nil {
		return
	}
	stop := context.AfterFunc(c.ctx, func() { _ = conn.Close(); _ = st.Close() })
	defer stop()
	if in.Mode == Mirror {
		mirrorTo(conn, st)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		// As on the outgoing path: while the copy to the app waits, the
		// tunnel's receive loop writes small frames to it itself.
		if w := splice.NewTCPTryWriter(tc); w != nil {
			st.SetSink(w)
		}
	}
	splice.Both(c.ctx, splice.Side{Conn: splice.AsConn(conn)}, splice.Side{Conn: splice.FINOnClose(st)})
}

type closeWriter interface{ CloseWrite() error }

// mirrorTo feeds the copy to the local app and drops what it answers.
func mirrorTo(conn net.Conn, st *mux.Stream) {
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, conn)
	}()
	if _, err := io.Copy(conn, st); err != nil {
		return
	}
	if cw, ok := conn.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	// Give the app a moment to answer the last request before its
	// connection closes under it.
	select {
	case <-drained:
	case <-time.After(time.Second):
	}
}
