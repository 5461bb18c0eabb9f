package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// TestEnvReadsTheTargetProcess: the agent reports the environment of the
// process it was told about, exactly as that process has it.
func TestEnvReadsTheTargetProcess(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	target := exec.CommandContext(ctx, "sleep", "60")
	target.Env = []string{"IMAGE_GREETING=hello from the image", "WITH_EQUALS=a=b", "EMPTY="}
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = target.Wait() })

	a := startAgent(t, agent.Options{TargetPID: target.Process.Pid})
	c := dial(t, a.Addr(), client.Options{})
	env, err := c.Env(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"IMAGE_GREETING": "hello from the image", "WITH_EQUALS": "a=b", "EMPTY": ""}
	if len(env) != len(want) {
		t.Errorf("Env() = %q, want %q", env, want)
	}
	for k, v := range want {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("Env()[%s] = %q (present %v), want %q", k, got, ok, v)
		}
	}
}

// TestEnvReportsAGoneProcess: a target that is gone is the agent's
// failure, with the PID in the message.
func TestEnvReportsAGoneProcess(t *testing.T) {
	t.Parallel()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, agent.Options{TargetPID: gone.Process.Pid})
	c := dial(t, a.Addr(), client.Options{})
	_, err := c.Env(ctxTimeout(t, 5*time.Second))
	var re *client.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "process "+strconv.Itoa(gone.Process.Pid)) {
		t.Errorf("Env() of a gone process: %v, want a RemoteError naming pid %d", err, gone.Process.Pid)
	}
}

// TestEnvFromAnOlderAgent: an agent that does not know Env closes the
// stream without an answer; the client says so with ErrEnvUnsupported, so
// that callers can fall back to other sources.
func TestEnvFromAnOlderAgent(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if _, err := proto.ReadMessage(c); err != nil {
			return
		}
		if err := proto.WriteMessage(c, proto.Welcome{Version: proto.Version}); err != nil {
			return
		}
		sess, err := yamux.Server(c, nil)
		if err != nil {
			return
		}
		defer sess.Close()
		if _, err := sess.AcceptStream(); err != nil { // the control stream
			return
		}
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			// What an agent of before Env does: the frame type is
			// unknown to its decoder, so it closes the stream.
			var hdr [proto.HeaderSize]byte
			_, _ = io.ReadFull(st, hdr[:])
			_ = st.Close()
		}
	}()
	c := dial(t, ln.Addr().String(), client.Options{})
	_, err = c.Env(ctxTimeout(t, 5*time.Second))
	if !errors.Is(err, client.ErrEnvUnsupported) {
		t.Errorf("Env() from an older agent: %v, want ErrEnvUnsupported", err)
	}
}
