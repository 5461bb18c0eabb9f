package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/enter"
)

// agentRunFlags are the agent's flags for a run started through
// Kubernetes (agent/kube sets them): end when the client is gone, and
// (as a Job on the target's node) enter the target container's network
// namespace first.
type agentRunFlags struct {
	idleExit       time.Duration
	enterContainer string
}

func (f *agentRunFlags) add(fs *pflag.FlagSet) {
	fs.DurationVar(&f.idleExit, "idle-exit", 0, "exit once no client has been connected for this long (0: never)")
	fs.StringVar(&f.enterContainer, "enter-container", "", "RUNTIME://ID of a container on this node: serve from its network namespace (needs hostPID and privileges)")
}

// serveAgent runs the agent, in another container's network namespace
// when asked.
func serveAgent(ctx context.Context, opts agent.Options, f agentRunFlags) error {
	if f.enterContainer != "" {
		return reexecInContainer(ctx, f.enterContainer)
	}
	if f.idleExit <= 0 {
		return agent.Serve(ctx, opts)
	}
	s, err := agent.New(opts)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", opts.ListenAddress)
	if err != nil {
		return fmt.Errorf("agent listen on %s: %w", opts.ListenAddress, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ln = agent.ExitWhenIdle(ln, f.idleExit, func() {
		opts.Logger.Info("no client for a while: exiting", "idle_exit", f.idleExit)
		cancel()
	})
	opts.Logger.Info("agent listening", "address", ln.Addr().String(), "idle_exit", f.idleExit)
	return s.Serve(ctx, ln)
}

// reexecInContainer finds the container's PID through the node's CRI and
// runs this same command again inside its network namespace, reading the
// pod's resolver files through /proc/PID/root and its environment from
// /proc/PID/environ (the agent has the node's PID namespace).
func reexecInContainer(ctx context.Context, containerID string) error {
	socket, id, err := enter.SplitID(containerID)
	if err != nil {
		return err
	}
	pid, err := enter.PID(ctx, socket, id)
	if err != nil {
		return err
	}
	var argv []string
	skip := false
	for _, a := range os.Args {
		switch {
		case skip:
			skip = false
			continue
		case a == "--enter-container":
			skip = true
			continue
		case len(a) > len("--enter-container=") && a[:len("--enter-container=")] == "--enter-container=":
			continue
		}
		argv = append(argv, a)
	}
	root := fmt.Sprintf("/proc/%d/root", pid)
	// Appended last, so they win over the same flags given before.
	argv = append(argv, "--resolv-conf", root+"/etc/resolv.conf", "--hosts", root+"/etc/hosts", "--target-pid", strconv.Itoa(pid))
	fmt.Fprintf(os.Stderr, "agent: entering the network namespace of container %s (pid %d)\n", id, pid)
	return enter.ExecIn(pid, argv, os.Environ())
}
