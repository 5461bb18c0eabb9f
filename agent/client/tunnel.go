package client

import (
	"sync"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// tunnel is one connection to the agent: the yamux session, its control
// stream, and the TCP flows on it by stream id, so that the agent's Abort
// finds its flow.
type tunnel struct {
	sess  *yamux.Session
	facts proto.Facts

	ctrl   *yamux.Stream
	ctrlMu sync.Mutex // one writer at a time on the control stream

	mu    sync.Mutex
	conns map[uint32]*tcpConn
}

// readControl handles the agent's Abort messages until the tunnel ends.
// Anything else on the control stream is a protocol error: the tunnel is
// closed and the client reconnects.
func (t *tunnel) readControl() {
	defer t.sess.Close()
	for {
		m, err := proto.ReadMessage(t.ctrl)
		if err != nil {
			return
		}
		a, ok := m.(proto.Abort)
		if !ok {
			return
		}
		t.mu.Lock()
		c := t.conns[a.StreamID]
		t.mu.Unlock()
		if c != nil {
			c.resetByPeer()
		}
	}
}

// sendAbort tells the agent the app closed a flow entirely.
func (t *tunnel) sendAbort(id uint32) {
	if t.sess.IsClosed() {
		return
	}
	t.ctrlMu.Lock()
	defer t.ctrlMu.Unlock()
	_ = proto.WriteMessage(t.ctrl, proto.Abort{StreamID: id})
}

func (t *tunnel) add(id uint32, c *tcpConn) {
	t.mu.Lock()
	t.conns[id] = c
	t.mu.Unlock()
}

func (t *tunnel) remove(id uint32) {
	t.mu.Lock()
	delete(t.conns, id)
	t.mu.Unlock()
}
