package router_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/router/routertest"
)

func TestFlowLogOnAFullDiskIsReported(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("/dev/full stands for a full file system here: %v", err)
	}
	defer full.Close()
	p := routertest.EchoTCP(t).Port()
	app := start(t, policy.Rules{TCP: true, UDP: true, Block: []string{"tcp://:" + itoa(p)}}, func(c *router.Config) { c.FlowLog = full })
	if _, err := app.DialTCP(testContext(t), hostLoopback(p)); err == nil {
		t.Fatal("a blocked dial went through")
	}
	app.WaitFlows(1)
	app.Router.Close()
	err = app.Router.FlowLogErr()
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("a flow log on a full disk: FlowLogErr %v, want the reason (no space left on device)", err)
	}
}

// A flow log nobody reads (a FIFO whose reader stopped) must not stall
// the packet loop: blocked UDP datagrams, whose records the loop itself
// writes, go on being refused, and other flows go on.
func TestFlowLogThatBlocksDoesNotStallTraffic(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "flows")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	reader, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0) // never read
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })

	echo := routertest.EchoTCP(t).Port()
	app := start(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true, Block: []string{"udp://10.1.2.3"}},
		func(c *router.Config) { c.FlowLog = w })
	// Each blocked datagram from a new socket is a flow, and a record:
	// more than the FIFO's buffer (64 KiB) holds.
	blocked := netip.MustParseAddrPort("10.1.2.3:53")
	const datagrams = 1000
	for i := range datagrams {
		c, err := app.DialUDP(blocked)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), routertest.WaitTimeout)
	defer cancel()
	c, err := app.DialTCP(ctx, hostLoopback(echo))
	if err != nil {
		t.Fatalf("a new connection after %d records the flow log could not take: %v", datagrams, err)
	}
	c.Close()
	app.Router.Close()
	if err := app.Router.FlowLogErr(); err == nil {
		t.Fatal("a flow log that could not take the records: FlowLogErr is nil, want the reason")
	} else {
		t.Logf("FlowLogErr: %v", err)
	}
}
