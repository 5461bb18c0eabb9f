package agent_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/agenttest"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// TestPodSocketsGetKeepAliveOnceTheFlowLasts: the agent's socket to the
// pod's peer has no keepalive while the flow is young (short connections
// spare the system calls) and gets it once the flow has lasted.
func TestPodSocketsGetKeepAliveOnceTheFlowLasts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held until the listener closes
		}
	}()
	peer := netip.MustParseAddrPort(ln.Addr().String())
	c := agenttest.Dial(t, agenttest.Start(t, agent.Options{}).Addr(), client.Options{})
	netnstest.CheckKeepAliveOnceItLasts(t, peer.Port(), agent.SetKeepAliveAfter, func(ctx context.Context) (io.Closer, error) {
		return c.DialTCP(ctx, peer)
	})
}
