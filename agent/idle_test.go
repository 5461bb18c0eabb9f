package agent

import (
	"net"
	"testing"
	"time"
)

// idleTestPeriod is the idle period in these tests. The tests assert no
// durations: whether a period has passed is told by a reference listener
// (see idleClock), so the period only has to outlast an Accept.
const idleTestPeriod = 200 * time.Millisecond

// waitBound bounds every wait for something that must happen.
const waitBound = 10 * time.Second

// idleClock starts a wrapped listener without clients: it fires when one
// idle period has passed since the call, which tells the test that a
// period has passed without measuring it.
func idleClock(t *testing.T) <-chan struct{} {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	fired := make(chan struct{})
	ExitWhenIdle(ln, idleTestPeriod, func() { close(fired) })
	return fired
}

// waitIdlePeriods returns once two idle periods have passed one after
// the other, as two reference listeners in a row tell. Two, so that a
// timer started up to a period before the first reference and not
// stopped has fired, and its callback run, well before the second ends.
func waitIdlePeriods(t *testing.T) {
	t.Helper()
	for range 2 {
		waitFired(t, idleClock(t), "the reference clock")
	}
}

func waitFired(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitBound):
		t.Fatalf("%s did not fire within %s", what, waitBound)
	}
}

func TestExitWhenIdleWaitsForTheLastClientToLeave(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The client connects first: its connection waits in the kernel's
	// backlog, so Accept below returns at once, well within the first
	// idle period.
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	idle := make(chan struct{}, 2)
	w := ExitWhenIdle(ln, idleTestPeriod, func() { idle <- struct{}{} })
	server, err := w.Accept()
	if err != nil {
		t.Fatal(err)
	}

	// Idle periods pass with the client connected.
	waitIdlePeriods(t)
	select {
	case <-idle:
		t.Fatal("idle fired while a client was connected")
	default:
	}

	server.Close()
	server.Close() // a second Close must not count twice (idle would never fire)
	select {
	case <-idle:
		t.Fatal("idle fired the moment the client left, not an idle period later")
	default:
	}
	waitFired(t, idle, "idle after the last client left")
}

func TestExitWhenIdleFiresOnceWithoutClients(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	idle := make(chan struct{}, 2)
	w := ExitWhenIdle(ln, idleTestPeriod, func() { idle <- struct{}{} })
	waitFired(t, idle, "idle without any client")

	// A client that comes and goes afterwards does not fire it again.
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := w.Accept(); err == nil {
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(waitBound):
		t.Fatalf("Accept did not return within %s", waitBound)
	}
	waitIdlePeriods(t) // counted from after the client left
	select {
	case <-idle:
		t.Fatal("idle fired a second time")
	default:
	}
}
