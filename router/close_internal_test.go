package router

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// Close must end while the app is still sending: the stack's Wait removes
// the NIC under the stack's lock and waits for the link's reader, which may
// be delivering a packet that needs that lock. Seen in CI as a sandbox run
// that never ended after its app had.
func TestCloseEndsWhilePacketsArrive(t *testing.T) {
	packet := append(make([]byte, vnetHdrSize), badChecksumUDP()...)
	closeWhileSending(t, Config{}, func(uint16) []byte { return packet })
}

// closeWhileSending closes a router (cfg with a link and policy of its
// own) while packets keep arriving, 20 times, each time a millisecond
// later after Start, and fails if Close does not return. next gives the
// i-th packet to send, virtio-net header included.
func closeWhileSending(t *testing.T, cfg Config, next func(i uint16) []byte) {
	t.Helper()
	pol, err := policy.New(policy.Rules{TCP: true, UDP: true})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 20 {
		link, peer := vnetPair(t)
		cfg.Link, cfg.Policy = link, pol
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for i := uint16(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := unix.Write(peer, next(i)); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Duration(round) * time.Millisecond)
		closed := make(chan struct{})
		go func() { r.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: Router.Close did not return while packets kept arriving", round)
		}
		close(stop)
		unix.Shutdown(peer, unix.SHUT_RDWR) // wakes a writer the closed link no longer reads for
		<-sent
	}
}

// badChecksumUDP is an IPv4 UDP datagram from the app to 10.1.2.3:9 that
// the netstack takes through its IP layer and then drops: nothing is
// written back.
func badChecksumUDP() []byte {
	b := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+4)
	ip := header.IPv4(b)
	src, dst := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("10.1.2.3")
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: 40000, DstPort: 9, Length: uint16(len(u)), Checksum: 0xbad})
	return b
}

// Close must not race new flows: datagrams that each start a UDP flow
// keep arriving while Close waits for the flows, and a flow counted after
// that wait began panicked ("WaitGroup is reused before previous Wait has
// returned"; seen once in CI).
func TestCloseWhileNewUDPFlowsStart(t *testing.T) {
	// The app listens nowhere: each loopback flow is decided (and
	// refused) on a goroutine of its own, as in a sandbox. Each source
	// port is a flow of its own, to the app's loopback's discard port:
	// nothing leaves the machine.
	listens := func(policy.Proto, uint16) bool { return false }
	closeWhileSending(t, Config{AppListens: listens}, func(i uint16) []byte {
		return append(make([]byte, vnetHdrSize), loopbackUDP(20000+i%40000)...)
	})
}

// loopbackUDP is an IPv4 UDP datagram from the app's port srcPort to
// 127.0.0.1:9, with correct checksums.
func loopbackUDP(srcPort uint16) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+4)
	ip := header.IPv4(b)
	src, dst := tcpip.AddrFrom4([4]byte{198, 18, 0, 2}), tcpip.AddrFrom4([4]byte{127, 0, 0, 1})
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: srcPort, DstPort: 9, Length: uint16(len(u))})
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(u)))
	sum = checksum.Checksum(u.Payload(), sum)
	u.SetChecksum(^u.CalculateChecksum(sum))
	return b
}
