package agent

import (
	"net"
	"testing"
	"time"
)

func TestExitWhenIdleWaitsForTheLastClientToLeave(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	idle := make(chan time.Time, 1)
	w := ExitWhenIdle(ln, 150*time.Millisecond, func() { idle <- time.Now() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := w.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	select {
	case <-idle:
		t.Fatal("idle fired while a client was connected")
	case <-time.After(400 * time.Millisecond):
	}
	left := time.Now()
	server.Close()
	server.Close() // a second Close must not count twice
	select {
	case at := <-idle:
		if d := at.Sub(left); d < 100*time.Millisecond {
			t.Fatalf("idle fired %s after the client left, want about 150ms", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("idle never fired after the last client left")
	}
}
