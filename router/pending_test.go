package router_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/routertest"
)

// silentDials is how many connections the app leaves pending to a
// destination that never answers: the figure measured in issue 13, where
// every other new connection stalled.
const silentDials = 9000

func TestPendingDialsToASilentDestinationDoNotStallOthers(t *testing.T) {
	silent := netip.MustParseAddrPort("10.96.0.99:5432") // drops every SYN
	good := netip.MustParseAddrPort("10.96.0.10:8080")
	echo := routertest.EchoTCP(t)

	var pending atomic.Int64 // dials the agent holds for the silent destination
	remote := &routertest.Remote{TCP: func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
		if dst == good {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", echo.String())
		}
		pending.Add(1)
		defer pending.Add(-1)
		<-ctx.Done() // silence, until the router gives up
		return nil, ctx.Err()
	}}
	app := routertest.Start(t, router.Config{Policy: routertest.Policy(t, everythingRemote), Remote: remote})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range silentDials {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := app.DialTCP(ctx, silent); err == nil {
				c.Close()
			}
		}()
	}
	// Every attempt is either held by the router (a dial in progress) or
	// dropped by it, to be retransmitted: the router is as full as the
	// silent destination can make it.
	if !routertest.Eventually(func() bool {
		return pending.Load()+app.Router.Stats().SYNsDropped >= silentDials
	}) {
		t.Fatalf("after %s, %d dials pending and %d SYNs dropped, want %d attempts seen", routertest.WaitTimeout,
			pending.Load(), app.Router.Stats().SYNsDropped, silentDials)
	}
	held := pending.Load()
	t.Logf("%d dials pending to %s, %d SYNs dropped", held, silent, app.Router.Stats().SYNsDropped)
	if held >= silentDials {
		t.Errorf("the router holds %d dials to one silent destination: want it bounded below %d", held, silentDials)
	}

	// A new connection elsewhere goes through at its first SYN.
	c, err := app.DialTCP(testContext(t), good)
	if err != nil {
		t.Fatalf("a new connection to %s while %d dials to %s are pending: %v", good, held, silent, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("uwu")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "uwu" {
		t.Fatalf("echo through %s: %q, %v", good, got, err)
	}
}
