package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/enter"
	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/debugsrv"
)

func newAgentCommand() *cobra.Command {
	var (
		opts      agent.Options
		tokenFile string
		commTO    time.Duration
		natFlag   string
		runFlags  agentRunFlags
		debug     string
	)
	cmd := &cobra.Command{
		Use:   "agent --listen HOST:PORT [--token-file FILE]",
		Short: "Serve tunnels from inside the target pod's network namespace",
		Long: "Serve trafficpolice tunnels: dial TCP and UDP and resolve names from this network namespace\n" +
			"for clients that present the shared token (--token-file, or $" + proto.EnvToken + "), and steal\n" +
			"or mirror the namespace's incoming TCP connections for them (nat rules named " + nat.ChainPrefix + "<id>, removed\n" +
			"on exit; needs NET_ADMIN). The rules are written with the iptables binary where it works, else with\n" +
			"nftables over netlink (--nat-backend). Meant to run inside the target pod's network namespace.",
		Example: "  head -c 32 /dev/urandom | base64 > token && trafficpolice agent --listen 0.0.0.0:7777 --token-file token\n" +
			"  TRAFFICPOLICE_AGENT_TOKEN=$(cat token) trafficpolice agent --listen 127.0.0.1:7777 --nat-backend nftables",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := proto.LoadToken(tokenFile)
			if err != nil {
				return err
			}
			opts.Token = tok
			opts.CommunicationTimeout = commTO
			if opts.NATBackend, err = nat.ParseBackend(natFlag); err != nil {
				return fmt.Errorf("--nat-backend: %w", err)
			}
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if debug != "" && runFlags.enterContainer == "" {
				addr, err := debugsrv.Serve(ctx, debug, nil, opts.Logger)
				if err != nil {
					return err
				}
				opts.Logger.Info("debug server", "address", addr.String())
			}
			return serveAgent(ctx, opts, runFlags)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.ListenAddress, "listen", "", "HOST:PORT to listen on (required)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the shared token (default: $"+proto.EnvToken+")")
	f.StringVar(&opts.ResolvConfPath, "resolv-conf", "/etc/resolv.conf", "the pod's resolver configuration")
	f.StringVar(&opts.HostsPath, "hosts", "/etc/hosts", "the pod's hosts file")
	f.DurationVar(&commTO, "communication-timeout", 30*time.Second,
		"bound on handshakes, requests and DNS resolution; how long a steal outlives a lost tunnel when the client does not say")
	f.IntVar(&opts.TargetPID, "target-pid", 0,
		"the process whose environment clients may import (feature.env); 0: the oldest process in this PID namespace besides the agent")
	f.BoolVar(&opts.Incoming, "incoming", true, "steal and mirror incoming traffic for clients (installs nat rules in this namespace)")
	natDefault := os.Getenv(nat.EnvBackend)
	if natDefault == "" {
		natDefault = string(nat.Auto)
	}
	f.StringVar(&natFlag, "nat-backend", natDefault,
		"how to write the nat rules: auto (iptables where it works, else nftables), iptables or nftables; $"+nat.EnvBackend+" sets the default")
	runFlags.add(f)
	f.StringVar(&debug, "debug-listen", "", "serve pprof and the agent's counters on this loopback HOST:PORT (in the agent's network namespace)")
	f.MarkHidden("debug-listen")
	cmd.MarkFlagRequired("listen")
	return cmd
}

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
