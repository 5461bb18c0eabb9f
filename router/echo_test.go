package router_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

// concurrentPings is how many pings the app has in flight at once.
const concurrentPings = 64

func TestConcurrentPingsShareTheHostsICMPSockets(t *testing.T) {
	netnstest.RequireRoot(t) // a raw socket, where datagram ICMP is not allowed
	opened := router.CountICMPSockets(t.Cleanup)
	app := start(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true}, nil)
	dst := netip.MustParseAddr("127.0.0.1")

	var wg sync.WaitGroup
	errs := make(chan error, concurrentPings)
	for i := range concurrentPings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := []byte(fmt.Sprintf("ping %d of the app", i))
			reply, err := app.Ping(testContext(t), dst, uint16(1000+i), data)
			switch {
			case err != nil:
				errs <- err
			case reply.Type() != header.ICMPv4EchoReply || reply.Sequence() != uint16(1000+i) || !bytes.Equal(reply.Payload(), data):
				errs <- fmt.Errorf("ping %d: answered type %d seq %d %q, want its own echo reply", i, reply.Type(), reply.Sequence(), reply.Payload())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// One shared socket per family at most: raw only where the host
	// refuses datagram ICMP (net.ipv4.ping_group_range).
	got := opened()
	t.Logf("ICMP sockets opened for %d pings: %v", concurrentPings, got)
	if got["ip4:icmp"] > 1 {
		t.Errorf("%d raw ICMP sockets opened for %d pings, each seeing all of the host's ICMP: want at most one, shared", got["ip4:icmp"], concurrentPings)
	}
}
