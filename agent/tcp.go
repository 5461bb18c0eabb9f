package agent

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/splice"
)

// keepAliveAfter is how long a flow lives before its pod-side socket gets
// TCP keepalive (splice.KeepAliveLater: set at the dial, it was 8 % of the
// agent's CPU on a burst of short connections). A variable for the tests.
var keepAliveAfter = splice.KeepAliveDelay

// serveTCP dials dst from the pod and relays the stream to it. The flow is
// registered before the dial so an Abort that arrives meanwhile is not lost.
func (s *Server) serveTCP(ctx context.Context, t *tunnel, st *mux.Stream, req proto.DialTCP) {
	dctx, cancel := context.WithTimeout(ctx, limit(req.Timeout, s.opts.DialTimeout))
	defer cancel()
	id := st.StreamID()
	f := &tcpFlow{st: st, t: t, cancelDial: cancel}
	t.ctrl.Register(id, f.abortByClient)
	defer t.ctrl.Unregister(id)

	d := net.Dialer{Control: s.dialControl(), KeepAlive: -1} // set below, if the flow lasts
	c, err := d.DialContext(dctx, "tcp", req.Dst.String())
	cancel()
	if err != nil {
		t.log.Debug("TCP dial failed", "dst", req.Dst.String(), "err", err)
		_ = proto.WriteMessage(st, failure(err))
		_ = st.Close()
		return
	}
	if !f.start(c.(*net.TCPConn)) {
		_ = c.Close()
		_ = st.Close()
		return
	}
	if err := proto.WriteMessage(st, proto.Result{}); err != nil {
		f.reset(false)
		return
	}
	stop := context.AfterFunc(ctx, func() { f.reset(false) })
	defer stop()
	defer splice.KeepAliveLater(c.(*net.TCPConn), keepAliveAfter).Stop()
	f.relay()
}

// tcpFlow relays one TCP connection. Half-closes pass through both ways;
// a full close from the client (Abort) closes the pod-side socket once the
// bytes already sent are written, and a reset from the pod's peer is
// passed to the client as Abort.
type tcpFlow struct {
	st         *mux.Stream
	t          *tunnel
	cancelDial context.CancelFunc // the client gave up: stop dialing

	mu       sync.Mutex
	conn     *net.TCPConn
	kickDown func() // wakes podToClient parked in the epoll set (nil: a goroutine copies)
	upDone   bool   // the client→pod direction reached the client's FIN
	aborted  bool   // the client closed the flow entirely
	closed   bool
	notified bool // we sent Abort: the client closes the stream
}

// start attaches the dialed connection; false means the client gave up
// while the dial ran.
func (f *tcpFlow) start(c *net.TCPConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.aborted || f.closed {
		return false
	}
	f.conn = c
	return true
}

func (f *tcpFlow) relay() {
	done := make(chan struct{})
	f.startPodToClient(func() { close(done) })
	f.clientToPod()
	<-done
	f.reset(false)
	f.mu.Lock()
	notified := f.notified
	f.mu.Unlock()
	if notified {
		// Our FIN could reach the app before the Abort is handled and
		// look like a clean end; the client closes the stream once it has
		// the Abort, so wait for that (bounded) before closing ours.
		_ = f.st.SetReadDeadline(time.Now().Add(abortLinger))
		_, _ = io.Copy(io.Discard, f.st)
	}
	_ = f.st.Close()
}

// abortLinger bounds how long a flow reset by the pod's peer waits for the
// client to acknowledge the Abort by closing the stream.
const abortLinger = 5 * time.Second

func (f *tcpFlow) clientToPod() {
	// While this goroutine waits for the stream, the tunnel's receive
	// loop writes the client's bytes to the socket itself (mux.SetSink).
	if w := splice.NewTCPTryWriter(f.conn); w != nil {
		f.st.SetSink(w)
	}
	_, err := splice.Copy(f.conn, f.st, streamWait(f.st), nil)
	f.st.SetSink(nil)
	switch {
	case splice.IsWrite(err):
		f.reset(true) // the pod's peer is gone
		return
	case err != nil:
		f.reset(false)
		return
	}
	f.mu.Lock()
	f.upDone = true
	aborted := f.aborted
	f.mu.Unlock()
	if aborted {
		f.reset(false)
	} else {
		_ = f.conn.CloseWrite()
	}
}

// streamWait waits for a yamux stream to have something to read without
// holding a copy buffer: a read into an empty buffer blocks until there is
// data, the end or a reset, and takes nothing (an idle flow's goroutine
// would otherwise hold a buffer in its read). (Stream.Shrink would save
// ~1 KiB more per idle flow, but called before every wait it reallocates
// the receive buffer for every frame of a bulk upload.)
func streamWait(st *mux.Stream) splice.WaitFunc {
	return func(<-chan struct{}) { _, _ = st.Read(nil) }
}

// startPodToClient copies the pod's socket to the client, parked in
// splice's epoll set while the socket has nothing to read (an idle flow
// then holds only clientToPod's goroutine: the stream has no readiness to
// wait on), and calls ended once it is over.
func (f *tcpFlow) startPodToClient(ended func()) {
	if n := splice.TCPNotifier(f.conn); n != nil {
		kick, err := splice.CopyNotified(f.st, f.conn, n, func(_ int64, err error) {
			f.podToClientEnded(err)
			ended()
		})
		if err == nil {
			f.mu.Lock()
			f.kickDown = kick
			closed := f.closed
			f.mu.Unlock()
			if closed { // reset closed the socket before it could kick
				kick()
			}
			return
		}
	}
	go func() {
		defer ended()
		_, err := splice.Copy(f.st, f.conn, splice.TCPWait(f.conn), nil)
		f.podToClientEnded(err)
	}()
}

// podToClientEnded passes on how the pod→client direction ended.
func (f *tcpFlow) podToClientEnded(err error) {
	switch {
	case err == nil:
		_ = f.st.Close() // FIN: the pod's peer finished sending
	case splice.IsWrite(err):
		f.mu.Lock()
		aborted := f.aborted
		f.mu.Unlock()
		if !aborted { // else clientToPod closes once it has written all
			f.reset(false)
		}
	default:
		f.mu.Lock()
		ours := f.closed
		f.mu.Unlock()
		f.reset(!ours) // a read error we did not cause is the peer's reset
	}
}

// abortByClient handles the client's Abort for this flow.
func (f *tcpFlow) abortByClient() {
	f.mu.Lock()
	f.aborted = true
	upDone := f.upDone
	dialing := f.conn == nil
	f.mu.Unlock()
	_ = f.st.Close() // stop sending to the client; wakes a blocked Write
	if dialing {
		f.cancelDial()
	}
	if upDone || dialing {
		f.reset(false)
	}
}

// reset closes both ends once; notify tells the client the pod's peer
// reset the flow, and leaves the stream to relay.
func (f *tcpFlow) reset(notify bool) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.notified = notify
	c := f.conn
	kick := f.kickDown
	f.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
	if kick != nil {
		// The closed socket left the epoll set without a word: a parked
		// podToClient must look again to see it closed.
		kick()
	}
	if notify {
		f.t.sendAbort(f.st.StreamID()) // relay closes the stream later
		return
	}
	_ = f.st.Close()
}
