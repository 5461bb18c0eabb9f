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

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// serveUDP opens a connected UDP socket from the pod to dst and relays
// datagrams both ways until either side closes or the flow idles out.
func (s *Server) serveUDP(ctx context.Context, t *tunnel, st *yamux.Stream, req proto.DialUDP) {
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
		if err := proto.WriteDatagram(st, buf[:n]); err != nil {
			break
		}
	}
	closeAll()
	<-done
}
