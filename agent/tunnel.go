package agent

import (
	"log/slog"
	"sync/atomic"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/incoming"
	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// tunnel is one client's state: its session, its control stream (whose
// Aborts find the client's TCP flows), and the same client as incoming
// traffic sees it. It dies with the session.
type tunnel struct {
	log  *slog.Logger
	sess *mux.Session
	ctrl *proto.Control
	peer *incoming.Peer
	// udpFlows counts the client's open UDP flows (Options.MaxUDPFlows).
	udpFlows atomic.Int64
}

func newTunnel(log *slog.Logger, sess *mux.Session, ctrl *mux.Stream) *tunnel {
	return &tunnel{
		log:  log,
		sess: sess,
		ctrl: proto.NewControl(ctrl),
		peer: &incoming.Peer{Log: log, Session: sess, Remote: sess.RemoteAddr().String()},
	}
}

// sendAbort tells the client that the pod-side peer of a flow reset it.
func (t *tunnel) sendAbort(id uint32) {
	if err := t.ctrl.Abort(id); err != nil {
		t.log.Debug("send Abort", "stream", id, "err", err)
	}
}
