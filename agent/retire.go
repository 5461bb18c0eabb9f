package agent

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

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
	joins    uint64 // how many have joined, ever: a Retire sees whether one joined while it checked
	retiring bool
	gone     chan struct{} // closed once retiring and the last client left
	tunnels  map[*tunnel]struct{}
}

func newClients() *clients {
	return &clients{gone: make(chan struct{}), tunnels: map[*tunnel]struct{}{}}
}

// join counts a new client; false once the agent is retiring.
func (c *clients) join() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retiring {
		return false
	}
	c.n++
	c.joins++
	return true
}

// attach makes a joined client's tunnel one that Retire can ping;
// detach undoes it before leave.
func (c *clients) attach(t *tunnel) {
	c.mu.Lock()
	c.tunnels[t] = struct{}{}
	c.mu.Unlock()
}

func (c *clients) detach(t *tunnel) {
	c.mu.Lock()
	delete(c.tunnels, t)
	c.mu.Unlock()
}

// others are the tunnels besides asker, with the join count at that
// moment.
func (c *clients) others(asker *tunnel) ([]*tunnel, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tunnel
	for t := range c.tunnels {
		if t != asker {
			out = append(out, t)
		}
	}
	return out, c.joins
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
// the only one alive: dead are tunnels found gone (closing, not yet
// counted out), and nobody may have joined since the join count
// joinsSeen. Otherwise it says how many others there are.
func (c *clients) retire(dead int, joinsSeen uint64) (ok bool, others int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retiring {
		return true, 0
	}
	alive := c.n - 1 - dead
	if c.joins != joinsSeen {
		alive = max(alive, 1) // one joined while the others were pinged
	}
	if alive > 0 {
		return false, alive
	}
	c.retiring = true
	return true, 0
}

// pingTimeout bounds a Retire's ping of another client: a run's tunnel
// answers within a round trip, even over a port-forward.
const pingTimeout = 2 * time.Second

// deadTunnels pings ts at once and closes those that do not answer
// within pingTimeout: a client that went away without its goodbye
// reaching the agent (killed, or a port-forward that did not pass the
// close on). It returns how many it closed.
func deadTunnels(ts []*tunnel) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	dead := 0
	for _, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answered := make(chan error, 1)
			go func() {
				_, err := t.sess.Ping()
				answered <- err
			}()
			var err error
			select {
			case err = <-answered:
			case <-time.After(pingTimeout):
				err = errors.New("no answer to a ping")
			}
			if err != nil {
				t.log.Info("a client does not answer: closing its tunnel", "err", err)
				_ = t.sess.Close()
				mu.Lock()
				dead++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return dead
}

// serveRetire answers a client's Retire.
func (s *Server) serveRetire(t *tunnel, st *mux.Stream) {
	defer st.Close()
	res := proto.Result{Class: proto.ClassRefused}
	if !s.opts.Retirable {
		res.Message = "this agent was not started for runs (no --idle-exit): it stays"
		_ = proto.WriteMessage(st, res)
		return
	}
	others, joins := s.clients.others(t)
	switch ok, others := s.clients.retire(deadTunnels(others), joins); {
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
