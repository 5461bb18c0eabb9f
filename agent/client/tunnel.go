package client

import (
	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// tunnel is one connection to the agent: the yamux session, its control
// stream (whose Aborts find the TCP flows on it), its DNS stream, and the
// pod's facts as the agent reported them on this connection.
type tunnel struct {
	sess  *mux.Session
	facts proto.Facts
	ctrl  *proto.Control
	// ctrlStream is the control stream itself, closed to say goodbye.
	ctrlStream *mux.Stream

	// dns is the stream all DNS queries share, set before dnsReady
	// closes; nil when the agent does not speak DNSStream.
	dns      *dnsStream
	dnsReady chan struct{}
}

// readControl hands the agent's Aborts to their flows until the tunnel
// ends. Anything else on the control stream is a protocol error: the
// tunnel is closed and the client reconnects.
func (t *tunnel) readControl() {
	defer t.sess.Close()
	_ = t.ctrl.Run()
}

// sendAbort tells the agent the app closed a flow entirely.
func (t *tunnel) sendAbort(id uint32) {
	if t.sess.IsClosed() {
		return
	}
	_ = t.ctrl.Abort(id)
}

func (t *tunnel) add(id uint32, c *tcpConn) { t.ctrl.Register(id, c.resetByPeer) }

func (t *tunnel) remove(id uint32) { t.ctrl.Unregister(id) }
