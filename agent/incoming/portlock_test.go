package incoming

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// Two agents of one pod that start redirecting the same port at the same
// instant: asking each other who holds it cannot tell (neither has
// published yet), so the port's lock decides: exactly one redirects it,
// the other is refused, and once the first lets it go the second can.
func TestAgentsRedirectingOnePortAtOnceGetItOneAtATime(t *testing.T) {
	port := uint16(20000 + rand.IntN(40000)) // the lock's name is per network namespace: one of our own
	var services [2]*Service
	var rules [2]*fakeRules
	for i := range services {
		services[i], rules[i] = newTestIncoming(t)
		services[i].lockPort = nat.LockPort
	}
	for round := range 50 {
		var wg sync.WaitGroup
		var subs [2]*subscription
		var errs [2]error
		start := make(chan struct{})
		for i := range services {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				subs[i], errs[i] = services[i].subscribe(&Peer{Remote: "test"}, proto.Subscribe{Mode: proto.ModeSteal, Port: port, Label: []string{"alice", "bob"}[i]})
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for i := range services {
			if errs[i] == nil {
				won++
			} else if !strings.Contains(errs[i].Error(), "already being redirected by another trafficpolice agent") {
				t.Fatalf("round %d: the refusal %q does not say another agent redirects the port", round, errs[i])
			}
		}
		if won != 1 || rules[0].has(port) == rules[1].has(port) {
			t.Fatalf("round %d: %d agents redirect port %d (errors %v), want exactly 1", round, won, port, errs)
		}
		for i, s := range subs {
			if s != nil {
				services[i].release(s)
			}
		}
	}
	unlock, err := nat.LockPort(port)
	if err != nil {
		t.Fatalf("the port's lock after both released it: %v", err)
	}
	unlock()
	if _, err := nat.LockPort(port); err != nil {
		t.Fatal(err)
	}
	if _, err := nat.LockPort(port); !errors.Is(err, nat.ErrPortLocked) {
		t.Fatalf("a held lock taken again: %v, want ErrPortLocked", err)
	}
}
