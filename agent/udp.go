package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// udpBatchBytes is how many bytes of datagrams that are waiting on a
// flow's socket the agent gathers into one stream write.
const udpBatchBytes = 16 << 10

// readWaiting reads one datagram that is already waiting on the socket,
// without blocking; false when none is (or the read failed: a refused
// earlier datagram, say, which UDP carries on after).
func readWaiting(rc syscall.RawConn, buf []byte) (int, bool) {
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), buf)
		return true // never wait in the poller
	})
	return n, err == nil && rerr == nil
}

// serveUDP opens a connected UDP socket from the pod to dst and relays
// datagrams both ways until either side closes or the flow idles out.
func (s *Server) serveUDP(ctx context.Context, t *tunnel, st *mux.Stream, req proto.DialUDP) {
	if n := t.udpFlows.Add(1); n > int64(s.opts.MaxUDPFlows) {
		t.udpFlows.Add(-1)
		t.log.Debug("UDP flow refused: too many open", "dst", req.Dst.String(), "max", s.opts.MaxUDPFlows)
		_ = proto.WriteMessage(st, proto.Result{Class: proto.ClassOther, Message: fmt.Sprintf(
			"too many UDP flows open on this tunnel (%d, the agent's limit): close some, or wait for idle ones to expire (after %s)",
			s.opts.MaxUDPFlows, s.opts.UDPIdleTimeout)})
		_ = st.Close()
		return
	}
	defer t.udpFlows.Add(-1)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(req.Dst))
	if err != nil {
		t.log.Debug("UDP dial failed", "dst", req.Dst.String(), "err", err)
		_ = proto.WriteMessage(st, failure(err))
		_ = st.Close()
		return
	}
	s.udpFlows.Add(1)
	defer s.udpFlows.Add(-1)
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			_ = c.Close()
			_ = st.Close()
			// Close only half-closes a yamux stream: wake the reader
			// too, or an expired flow lives on until the client closes.
			_ = st.SetReadDeadline(time.Now())
		})
	}
	defer closeAll()
	if err := proto.WriteMessage(st, proto.Result{}); err != nil {
		return
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()

	idle := s.opts.UDPIdleTimeout
	var last atomic.Int64 // unix nanoseconds of the last datagram either way
	last.Store(time.Now().UnixNano())

	done := make(chan struct{})
	go func() {
		defer close(done)
		defer closeAll()
		buf := make([]byte, proto.MaxDatagramSize)
		for {
			n, err := proto.ReadDatagram(st, buf)
			if err != nil {
				return
			}
			last.Store(time.Now().UnixNano())
			// A refused earlier datagram (ICMP) surfaces on a later write:
			// UDP carries on, as it would for the app.
			if _, err := c.Write(buf[:n]); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
				return
			}
		}
	}()

	buf := make([]byte, proto.MaxDatagramSize)
	var out []byte // datagrams framed for the stream, sent in one Write
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	for {
		_ = c.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		n, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				if time.Since(time.Unix(0, last.Load())) < idle {
					continue
				}
				t.log.Debug("UDP flow idle, closing", "dst", req.Dst.String())
			case errors.Is(err, syscall.ECONNREFUSED):
				continue
			}
			break
		}
		last.Store(time.Now().UnixNano())
		// Datagrams that arrived together go to the client in one
		// stream write: one frame and one hand-off to the tunnel's send
		// loop for the lot, not one each.
		out = proto.AppendDatagram(out[:0], buf[:n])
		for len(out) < udpBatchBytes {
			n, ok := readWaiting(rc, buf)
			if !ok {
				break
			}
			out = proto.AppendDatagram(out, buf[:n])
		}
		if _, err := st.Write(out); err != nil {
			break
		}
		if cap(out) > 2*udpBatchBytes {
			out = nil // one large datagram need not stay allocated
		}
	}
	closeAll()
	<-done
}
