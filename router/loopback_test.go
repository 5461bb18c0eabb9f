package router_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/router/routertest"
)

// synTo is a TCP SYN from the app's address to dst, as raw IPv4 bytes.
func synTo(dst netip.AddrPort) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	src, to := tcpip.AddrFrom4(routertest.AppAddr4.As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: to})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: dst.Port(), SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, to, uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
	return b
}

// An app with CAP_NET_RAW can put a packet for 0.0.0.0 on the TUN (a
// packet socket skips the kernel's own rewrite to 127.0.0.1). The host's
// kernel takes 0.0.0.0 as its own loopback, so such a flow must not be
// dialed from the host without a rule. (The netstack drops these packets
// today; the policy treats them as loopback besides.)
func TestUnspecifiedDestinationNeverReachesTheHostByDefault(t *testing.T) {
	dialed := make(chan string, 4)
	marker := netip.MustParseAddrPort("10.1.2.3:80")
	app := routertest.Start(t, router.Config{
		Policy: routertest.Policy(t, policy.Rules{TCP: true, UDP: true, Block: []string{marker.Addr().String()}}),
		DialLocal: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed <- addr
			return nil, syscall.ECONNREFUSED // dial nothing: what counts is that it was asked
		},
	})
	for _, dst := range []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:8888"), marker} {
		if err := app.Inject(synTo(dst)); err != nil {
			t.Fatal(err)
		}
	}
	// The marker's SYN came second: once its flow is logged, the first
	// one has been handled too.
	var recs []router.FlowRecord
	routertest.Eventually(func() bool {
		recs = app.Flows()
		return slices.ContainsFunc(recs, func(r router.FlowRecord) bool { return r.Dst == marker.String() })
	})
	select {
	case addr := <-dialed:
		t.Fatalf("a SYN to 0.0.0.0:8888 was dialed from the host at %s (flows %+v)", addr, recs)
	default:
	}
	for _, r := range recs {
		if r.Dst != marker.String() && r.Route == "local" {
			t.Fatalf("flow %+v goes to the host", r)
		}
	}
	if !slices.ContainsFunc(recs, func(r router.FlowRecord) bool { return r.Dst == marker.String() && r.Route == "block" }) {
		t.Fatalf("the marker flow was not logged: %+v", recs)
	}
}
