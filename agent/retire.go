package agent

import (
	"fmt"
	"sync"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// clients counts the tunnels that passed their handshake, so that a
// shared agent (several runs on one target pod) can leave with its last
// client and with no one else: Retire succeeds only for the one client
// left, and from then on handshakes are refused, so no run can join an
// agent that is about to exit.
type clients struct {
	mu       sync.Mutex
	n        int
	retiring bool
	gone     chan struct{} // closed once retiring and the last client left
}

func newClients() *clients { return &clients{gone: make(chan struct{})} }

// join counts a new client; false once the agent is retiring.
func (c *clients) join() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retiring {
		return false
	}
	c.n++
	return true
}

// leave uncounts a client that joined.
func (c *clients) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n--
	if c.retiring && c.n == 0 {
		close(c.gone)
	}
}

// retire agrees to leave when the asker, one of the counted clients, is
// the only one; otherwise it says how many others there are.
func (c *clients) retire() (ok bool, others int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retiring {
		return true, c.n - 1
	}
	if c.n != 1 {
		return false, c.n - 1
	}
	c.retiring = true
	return true, 0
}

// serveRetire answers a client's Retire.
func (s *Server) serveRetire(t *tunnel, st *yamux.Stream) {
	defer st.Close()
	res := proto.Result{Class: proto.ClassRefused}
	if !s.opts.Retirable {
		res.Message = "this agent was not started for runs (no --idle-exit): it stays"
		_ = proto.WriteMessage(st, res)
		return
	}
	switch ok, others := s.clients.retire(); {
	case ok:
		res.Class = proto.ClassOK
		t.log.Info("the last client is leaving: this agent exits with it and takes no new client")
	case others == 1:
		res.Message = "1 other client is connected: the agent stays for it"
	default:
		res.Message = fmt.Sprintf("%d other clients are connected: the agent stays for them", others)
	}
	_ = proto.WriteMessage(st, res)
}
