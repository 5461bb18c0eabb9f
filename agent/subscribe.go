package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// startIncoming sets up steal and mirror: the agent's id and liveness
// socket, the redirect listeners and the nat rules (in the backend
// Options.NATBackend picks), after removing the rules of dead agents.
// When something is missing (no NET_ADMIN, no nat in the kernel) the agent
// still serves outgoing traffic, and tells every client why incoming
// traffic cannot work. The returned function undoes it.
func (s *Server) startIncoming(ctx context.Context, tunnelAddr net.Addr, wg *sync.WaitGroup) func() {
	fail := func(err error) func() {
		s.incomingErr = err.Error()
		s.log.Warn("incoming traffic (steal, mirror) is not available", "err", err)
		return func() {}
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fail(fmt.Errorf("random agent id: %w", err))
	}
	id := hex.EncodeToString(b[:])
	live, err := holdLiveness(id)
	if err != nil {
		return fail(err)
	}
	if removed, err := sweepStale(id, s.log); err != nil {
		s.log.Warn("removing the nat rules of dead agents", "err", err, "removed", removed)
	}
	var lc net.ListenConfig
	ln4, err := lc.Listen(ctx, "tcp4", "0.0.0.0:0")
	if err != nil {
		_ = live.Close()
		return fail(fmt.Errorf("listen for redirected connections: %w", err))
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
	rules, err := newNATBackend(s.opts.NATBackend, id, uint16(ln4.Addr().(*net.TCPAddr).Port), port6, s.log)
	if err != nil {
		closeAll()
		return fail(fmt.Errorf("set up nat rules in the pod (the agent needs the NET_ADMIN capability, and nat in the kernel's nf_tables or a working iptables): %w", err))
	}
	in := newIncoming(s.log, rules, s.opts)
	if ta, ok := tunnelAddr.(*net.TCPAddr); ok {
		in.reserved[uint16(ta.Port)] = "the agent's own tunnel port"
	}
	for _, ln := range lns {
		in.reserved[uint16(ln.Addr().(*net.TCPAddr).Port)] = "the agent's redirect port"
	}
	s.incoming = in
	where := rules.where()
	s.log.Info("incoming traffic ready", "nat_backend", string(rules.kind()), "rules", where)
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.serveRedirected(ctx, ln, wg)
		}()
	}
	return func() {
		in.close()
		closeAll()
		if err := rules.close(); err != nil {
			s.log.Error("remove the agent's nat rules", "rules", where, "err", err)
			return
		}
		s.log.Info("removed the agent's nat rules", "rules", where)
	}
}

// serveSubscribe holds one subscription for as long as its stream lasts:
// the client closing the stream ends it at once, the tunnel dropping ends
// it after its linger time.
func (s *Server) serveSubscribe(t *tunnel, st *yamux.Stream, req proto.Subscribe) {
	defer st.Close()
	if s.incoming == nil {
		_ = proto.WriteMessage(st, proto.Result{Class: proto.ClassOther,
			Message: "the agent cannot steal or mirror: " + s.incomingErr})
		return
	}
	sub, err := s.incoming.subscribe(t, req)
	if err != nil {
		t.log.Info("subscription refused", "mode", req.Mode.String(), "port", req.Port, "label", req.Label, "err", err)
		_ = proto.WriteMessage(st, proto.Result{Class: proto.ClassOther, Message: err.Error()})
		return
	}
	if err := proto.WriteMessage(st, proto.Result{}); err != nil {
		s.incoming.detach(sub)
		return
	}
	_, err = io.Copy(io.Discard, st)
	if err == nil && !t.sess.IsClosed() {
		s.incoming.release(sub) // the client unsubscribed
		return
	}
	// The tunnel is lost (or the agent is shutting down, and removes
	// everything itself).
	s.incoming.detach(sub)
}

// dialControl marks the agent's outgoing sockets while it steals, so that
// its own dials to the pod's ports are never redirected back to itself.
func (s *Server) dialControl() func(network, address string, c syscall.RawConn) error {
	if s.incoming == nil {
		return nil
	}
	return softMarkControl
}
