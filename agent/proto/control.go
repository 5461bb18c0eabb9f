package proto

import (
	"fmt"
	"io"
	"sync"
)

// Control is a tunnel's control stream, the same at both ends: after the
// handshake it carries only Abort, which drops one flow abruptly (a reset
// the stream's FIN cannot express). Each end registers its flows by stream
// id, so that the other end's Abort finds its flow.
type Control struct {
	rw io.ReadWriter

	wmu sync.Mutex // one writer at a time

	mu    sync.Mutex
	flows map[uint32]func()
}

// NewControl wraps the control stream once the handshake is done on it.
func NewControl(rw io.ReadWriter) *Control {
	return &Control{rw: rw, flows: map[uint32]func(){}}
}

// Register has onAbort called when the peer aborts stream id.
func (c *Control) Register(id uint32, onAbort func()) {
	c.mu.Lock()
	c.flows[id] = onAbort
	c.mu.Unlock()
}

// Unregister forgets stream id.
func (c *Control) Unregister(id uint32) {
	c.mu.Lock()
	delete(c.flows, id)
	c.mu.Unlock()
}

// Abort tells the peer that this end dropped stream id.
func (c *Control) Abort(id uint32) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return WriteMessage(c.rw, Abort{StreamID: id})
}

// Run hands the peer's Aborts to their flows until the control stream
// ends (the tunnel is over: it returns the read's error) or carries
// anything but Abort, a protocol error that ends the tunnel.
func (c *Control) Run() error {
	for {
		m, err := ReadMessage(c.rw)
		if err != nil {
			return err
		}
		a, ok := m.(Abort)
		if !ok {
			return fmt.Errorf("unexpected %s on the control stream", m.Type())
		}
		c.mu.Lock()
		onAbort := c.flows[a.StreamID]
		c.mu.Unlock()
		if onAbort != nil {
			onAbort()
		}
	}
}
