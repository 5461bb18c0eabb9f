package agent

import (
	"log/slog"
	"sync"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// tunnel is one client's state: its control stream and its TCP flows by
// stream id, so that an Abort finds its flow. It dies with the session.
type tunnel struct {
	log    *slog.Logger
	sess   *yamux.Session // the agent opens incoming streams on it
	remote string         // the client's address, for logs and labels

	ctrl   *yamux.Stream
	ctrlMu sync.Mutex // one writer at a time on the control stream

	mu    sync.Mutex
	flows map[uint32]*tcpFlow
}

// readControl handles the client's Abort messages until the control
// stream ends; anything else there is a protocol error that ends it.
func (t *tunnel) readControl() {
	for {
		m, err := proto.ReadMessage(t.ctrl)
		if err != nil {
			return
		}
		a, ok := m.(proto.Abort)
		if !ok {
			t.log.Warn("unexpected message on the control stream, closing the tunnel", "type", m.Type().String())
			return
		}
		t.mu.Lock()
		f := t.flows[a.StreamID]
		t.mu.Unlock()
		if f != nil {
			f.abortByClient()
		}
	}
}

// sendAbort tells the client that the pod-side peer of a flow reset it.
func (t *tunnel) sendAbort(id uint32) {
	t.ctrlMu.Lock()
	defer t.ctrlMu.Unlock()
	if err := proto.WriteMessage(t.ctrl, proto.Abort{StreamID: id}); err != nil {
		t.log.Debug("send Abort", "stream", id, "err", err)
	}
}

func (t *tunnel) add(id uint32, f *tcpFlow) {
	t.mu.Lock()
	t.flows[id] = f
	t.mu.Unlock()
}

func (t *tunnel) remove(id uint32) {
	t.mu.Lock()
	delete(t.flows, id)
	t.mu.Unlock()
}
