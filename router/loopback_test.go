package router

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// synTo is a TCP SYN from the app's address to dst, as raw IPv4 bytes.
func synTo(dst netip.AddrPort) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	src, to := tcpip.AddrFrom4(appAddr.As4()), tcpip.AddrFrom4(dst.Addr().As4())
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
	appEnd, routerEnd := pipe.New("", "", 65520)
	marker := netip.MustParseAddrPort("10.1.2.3:80")
	h := newHarness(t, policy.Rules{TCP: true, UDP: true, Block: []string{marker.Addr().String()}}, func(c *Config) {
		c.Link = routerEnd
		c.DialLocal = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed <- addr
			return nil, syscall.ECONNREFUSED // dial nothing: what counts is that it was asked
		}
	})
	appEnd.Attach(nopDispatcher{}) // the router's answers go nowhere
	for _, dst := range []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:8888"), marker} {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(synTo(dst))})
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		var pkts stack.PacketBufferList
		pkts.PushBack(pkt)
		if _, err := appEnd.WritePackets(pkts); err != nil {
			t.Fatal(err)
		}
		pkt.DecRef()
	}
	// The marker's SYN came second: once its flow is logged, the first
	// one has been handled too.
	var recs []FlowRecord
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		recs = h.flowLog.records(t)
		if slices.ContainsFunc(recs, func(r FlowRecord) bool { return r.Dst == marker.String() }) {
			break
		}
	}
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
	if !slices.ContainsFunc(recs, func(r FlowRecord) bool { return r.Dst == marker.String() && r.Route == "block" }) {
		t.Fatalf("the marker flow was not logged: %+v", recs)
	}
}

type nopDispatcher struct{}

func (nopDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
func (nopDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}
