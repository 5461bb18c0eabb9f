package router_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/router/routertest"
)

// Deciding a loopback UDP flow may read the app's listeners from /proc
// (AppListens), which can be slow; the packet loop must go on meanwhile.
// Here AppListens does not answer at all until the test ends: a TCP
// connection started after the stuck datagram must still be refused.
func TestSlowListenerLookupForLoopbackUDPDoesNotStallThePacketLoop(t *testing.T) {
	asked := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	app := start(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true, Block: []string{"10.1.2.3"}}, func(c *router.Config) {
		c.AppListens = func(proto policy.Proto, port uint16) bool {
			if proto == policy.UDP {
				select {
				case asked <- struct{}{}:
				default:
				}
				<-release
			}
			return false
		}
	})
	// Registered after start, so it runs before the router's Close.
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	u, err := app.DialUDP(hostLoopback(5353))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	// The test's link hands packets to the router on the writer's
	// goroutine: a stalled loop would block these calls, not fail them.
	go u.Write([]byte("q"))
	select {
	case <-asked:
	case <-time.After(routertest.WaitTimeout):
		t.Fatal("the router never asked whether the app listens on the loopback UDP port")
	}
	dialed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), routertest.WaitTimeout)
		defer cancel()
		_, err := app.DialTCP(ctx, netip.MustParseAddrPort("10.1.2.3:80"))
		dialed <- err
	}()
	select {
	case err := <-dialed:
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("a blocked TCP dial while a loopback UDP flow was being decided: %v, want refused", err)
		}
	case <-time.After(routertest.WaitTimeout + time.Second):
		t.Fatal("a TCP dial got no answer while a loopback UDP flow was being decided: the packet loop stalled")
	}
	once.Do(func() { close(release) })
}

// A blocked loopback datagram is decided off the packet loop (above), and
// the app still learns at once that it was refused.
func TestBlockedLoopbackUDPIsRefusedWhenDecidedOffTheLoop(t *testing.T) {
	app := start(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true, Block: []string{"udp://:9"}}, func(c *router.Config) {
		c.AppListens = func(policy.Proto, uint16) bool { return false }
	})
	c, err := app.DialUDP(hostLoopback(9))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	if recs := app.WaitFlows(1); recs[0].Route != "block" {
		t.Fatalf("record %+v, want a blocked flow", recs[0])
	}
	// Read only once the flow is decided: the test's app is a netstack,
	// whose reader is not woken by an ICMP error (a kernel's is), but
	// finds the error when it reads.
	c.SetReadDeadline(time.Now().Add(routertest.WaitTimeout))
	_, err = c.Read(make([]byte, 10))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("blocked loopback UDP read: %v, want connection refused", err)
	}
}
