package router

import (
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// echoTimeout is how long a forwarded ping waits for its answer.
const echoTimeout = 3 * time.Second

// listenICMP opens the host's ICMP sockets; tests count what it opens.
var listenICMP = icmp.ListenPacket

// handleEcho4 and handleEcho6 take the app's ICMP echo requests (the
// netstack hands them over for addresses it does not own) and route them
// like any flow: local ones are pinged from the host and the answer is
// passed back; blocked ones get "administratively prohibited"; remote ones
// are not forwarded (the tunnel carries no ICMP) and say so once.
func (r *Router) handleEcho4(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	h := header.ICMPv4(pkt.TransportHeader().Slice())
	if len(h) < header.ICMPv4MinimumSize || h.Type() != header.ICMPv4Echo {
		return false
	}
	req := append([]byte(nil), stack.PayloadSince(pkt.TransportHeader()).AsSlice()...)
	quoted := append(append([]byte(nil), pkt.NetworkHeader().Slice()...), req[:min(8, len(req))]...)
	r.echo(id, req, quoted, false)
	return true
}

func (r *Router) handleEcho6(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	h := header.ICMPv6(pkt.TransportHeader().Slice())
	if len(h) < header.ICMPv6EchoMinimumSize || h.Type() != header.ICMPv6EchoRequest {
		return false
	}
	req := append([]byte(nil), stack.PayloadSince(pkt.TransportHeader()).AsSlice()...)
	quoted := append(append([]byte(nil), pkt.NetworkHeader().Slice()...), req...)
	r.echo(id, req, quoted, true)
	return true
}

func (r *Router) echo(id stack.TransportEndpointID, req, quoted []byte, v6 bool) {
	app := addrFrom(id.RemoteAddress)
	wire := addrFrom(id.LocalAddress) // the address as it crossed the TUN
	dst := r.appDst(id.LocalAddress, 0)
	f := r.newFlow(policy.ICMP, netip.AddrPortFrom(app, 0), dst)
	switch f.decision.Route {
	case policy.Block:
		r.stats.blocked.Add(1)
		r.writeRaw(v6, dstUnreachable(wire, app, quoted, v6, header.ICMPv4HostProhibited, header.ICMPv6Prohibited))
		f.rec.Error = errBlocked.Error()
		r.endFlow(f)
		return
	case policy.Local:
	default:
		r.warnOnceFor("echo "+dst.Addr().String(), "not forwarding ICMP echo: only the local route carries it",
			"dst", dst.Addr().String(), "route", f.decision.Route.String())
		f.rec.Error = "ICMP echo is forwarded on the local route only"
		r.endFlow(f)
		return
	}
	if !r.track() {
		f.rec.Error = "the router is closing"
		r.endFlow(f)
		return
	}
	go func() {
		defer r.wg.Done()
		reply, err := r.pinger.ping(r.ctx, dst.Addr(), req, v6)
		f.rec.BytesOut = int64(len(req))
		if err != nil {
			f.rec.Error = err.Error()
			r.endFlow(f)
			return
		}
		f.rec.BytesIn = int64(len(reply))
		r.writeRaw(v6, echoReply(wire, app, reply, v6))
		r.endFlow(f)
	}()
}

// echoReply wraps the host's answer in an IP header from the address the
// app pinged to the app.
func echoReply(from, to netip.Addr, icmpMsg []byte, v6 bool) []byte {
	if !v6 {
		pkt := ipv4Header(from, to, header.ICMPv4ProtocolNumber, len(icmpMsg))
		body := append([]byte(nil), icmpMsg...)
		m := header.ICMPv4(body)
		m.SetChecksum(0)
		m.SetChecksum(^checksum.Checksum(m, 0))
		return append(pkt, body...)
	}
	pkt := ipv6Header(from, to, header.ICMPv6ProtocolNumber, len(icmpMsg))
	body := append([]byte(nil), icmpMsg...)
	m := header.ICMPv6(body)
	m.SetChecksum(0)
	m.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m, Src: tcpip.AddrFrom16(from.As16()), Dst: tcpip.AddrFrom16(to.As16())}))
	return append(pkt, body...)
}
