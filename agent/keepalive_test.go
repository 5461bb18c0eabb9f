package agent_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name  string
		after time.Duration
		want  bool
	}{
		{"a young flow", time.Hour, false},
		{"a flow that lasted", 50 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer agent.SetKeepAliveAfter(tc.after)()
			conn, err := c.DialTCP(ctx, peer)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for {
				armed := netnstest.KeepAliveArmed(t, peer.Port())
				if armed == tc.want {
					return
				}
				if !tc.want || ctx.Err() != nil {
					t.Fatalf("keepalive on the agent's socket to the peer: %v, want %v", armed, tc.want)
				}
				time.Sleep(20 * time.Millisecond) // polling for the timer, not synchronising
			}
		})
	}
}
