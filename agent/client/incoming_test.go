package client_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
)

func TestSubscribeRefusedWhenTheAgentCannotSteal(t *testing.T) {
	a := startAgent(t, agent.Options{}) // Incoming off: an agent sharing the host's namespace
	c, err := client.Dial(context.Background(), client.Options{Address: a.Addr(), Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if why := c.IncomingError(); !strings.Contains(why, "without incoming traffic") {
		t.Errorf("IncomingError() = %q, want the agent's reason", why)
	}
	dial := func(context.Context, client.IncomingConn) (net.Conn, error) { return nil, nil }
	_, err = c.Subscribe(context.Background(), client.SubscribeOptions{Mode: client.Steal, Port: 80, Dial: dial})
	if err == nil || !strings.Contains(err.Error(), "steal pod port 80: the agent refused") {
		t.Fatalf("Subscribe = %v, want the agent's refusal", err)
	}
	for _, o := range []client.SubscribeOptions{
		{Mode: 7, Port: 80, Dial: dial},
		{Mode: client.Mirror, Dial: dial},
		{Mode: client.Mirror, Port: 80},
	} {
		if _, err := c.Subscribe(context.Background(), o); err == nil {
			t.Errorf("Subscribe(%+v) accepted bad options", o)
		}
	}
}

func TestDefaultLabelNamesTheSudoUser(t *testing.T) {
	t.Setenv("SUDO_USER", "alice")
	if l := client.DefaultLabel(); !strings.HasPrefix(l, "alice@") {
		t.Errorf("DefaultLabel() = %q, want alice@HOST", l)
	}
}
