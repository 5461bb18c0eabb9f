package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
)

// An agent shared by several runs leaves with the last of them, and only
// then: Retire is refused while another client is connected, and once it
// is agreed no new client can join the agent that is about to exit.
func TestSharedAgentRetiresWithItsLastClientOnly(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{Retirable: true})
	alice := dial(t, a.Addr(), client.Options{})
	bob := dial(t, a.Addr(), client.Options{})
	ctx := ctxTimeout(t, 10*time.Second)

	left, why, err := alice.Retire(ctx)
	if err != nil || left || !strings.Contains(why, "1 other client is connected") {
		t.Fatalf("alice's Retire with bob connected = %v, %q, %v; want refused naming 1 other client", left, why, err)
	}
	if _, err := alice.Ping(ctx); err != nil {
		t.Fatalf("alice's tunnel after a refused Retire: %v", err)
	}
	alice.Close()

	// bob is now alone; the agent may have counted alice out a moment
	// later than her Close returned.
	for {
		left, why, err = bob.Retire(ctx)
		if err != nil || left || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || !left {
		t.Fatalf("bob's Retire alone = %v, %q, %v; want agreed", left, why, err)
	}
	_, err = client.Dial(context.Background(), client.Options{Address: a.Addr(), Token: testToken, CommunicationTimeout: 5 * time.Second})
	if !errors.Is(err, client.ErrAgentRetiring) {
		t.Fatalf("a new client after the Retire: Dial = %v, want ErrAgentRetiring", err)
	}
	if _, err := bob.Ping(ctx); err != nil {
		t.Fatalf("bob's tunnel after his Retire: %v", err)
	}
	bob.Close()
	a.WaitExit(10 * time.Second)
}

// A standing agent (started by hand, no --idle-exit) never retires.
func TestStandingAgentRefusesToRetire(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	left, why, err := c.Retire(ctxTimeout(t, 10*time.Second))
	if err != nil || left || !strings.Contains(why, "not started for runs") {
		t.Fatalf("Retire = %v, %q, %v; want refused: not started for runs", left, why, err)
	}
	c.Close()
	dial(t, a.Addr(), client.Options{})
}
