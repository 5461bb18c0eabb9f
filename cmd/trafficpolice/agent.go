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
	"github.com/trafficpolice/trafficpolice/agent/tunneltls"
	"github.com/trafficpolice/trafficpolice/debugsrv"
)

func newAgentCommand() *cobra.Command {
	var (
		opts      agent.Options
		tokenFile string
		tlsKey    string
		commTO    time.Duration
		natFlag   string
		runFlags  agentRunFlags
		debug     string
	)
	cmd := &cobra.Command{
		Use:   "agent --listen HOST:PORT [--token-file FILE] [--tls-key FILE]",
		Short: "Serve tunnels from inside the target pod's network namespace",
		Long: "Serve trafficpolice tunnels: dial TCP and UDP and resolve names from this network namespace\n" +
			"for clients that present the shared token (--token-file, or $" + proto.EnvToken + "), and steal\n" +
			"or mirror the namespace's incoming TCP connections for them (nat rules named " + nat.ChainPrefix + "<id>, removed\n" +
			"on exit; needs NET_ADMIN). The rules are written with the iptables binary where it works, else with\n" +
			"nftables over netlink (--nat-backend). Meant to run inside the target pod's network namespace.\n\n" +
			"With --tls-key FILE (created if missing) the agent serves TLS 1.3 only, with a certificate for that key, and\n" +
			"logs the key's fingerprint: clients pin it (sandbox run --agent-fingerprint) and send their token only to\n" +
			"this agent. Without it the tunnel is in clear: fit for a channel that is secure already (the port-forward\n" +
			"that sandbox run opens to an agent it starts), not for a network.",
		Example: "  head -c 32 /dev/urandom | base64 > token && trafficpolice agent --listen 0.0.0.0:7777 --token-file token --tls-key agent.key\n" +
			"  trafficpolice agent fingerprint --tls-key agent.key   # the line to give clients: sha256:...\n" +
			"  TRAFFICPOLICE_AGENT_TOKEN=$(cat token) trafficpolice agent --listen 127.0.0.1:7777 --nat-backend nftables",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := proto.LoadToken(tokenFile)
			if err != nil {
				return err
			}
			opts.Token = tok
			if tlsKey != "" {
				key, created, err := tunneltls.LoadOrCreateKey(tlsKey)
				if err != nil {
					return fmt.Errorf("--tls-key: %w", err)
				}
				if created {
					fmt.Fprintf(os.Stderr, "agent: created a new TLS key in %s\n", tlsKey)
				}
				opts.TLSKey = key
			}
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
	f.StringVar(&tokenFile, "token-file", "", "file holding the shared token on its first line (default: $"+proto.EnvToken+")")
	f.StringVar(&tlsKey, "tls-key", "", "serve TLS with this private key (PEM, Ed25519 or ECDSA P-256; an Ed25519 key is created with mode 0600 if the file is missing)")
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
	cmd.AddCommand(newAgentFingerprintCommand())
	return cmd
}

func newAgentFingerprintCommand() *cobra.Command {
	var tlsKey string
	cmd := &cobra.Command{
		Use:   "fingerprint --tls-key FILE",
		Short: "Print the fingerprint of the agent's TLS key, for clients to pin",
		Long: "Print the fingerprint of the key an agent started with --tls-key FILE serves (sha256: and the SHA-256 of\n" +
			"its public key in base64), the value of sandbox run's --agent-fingerprint, agent.fingerprint, or the\n" +
			"token file's second line. A missing FILE is created as the agent would create it.",
		Example: "  echo \"$(trafficpolice agent fingerprint --tls-key agent.key)\" >> token   # the token file's second line",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, created, err := tunneltls.LoadOrCreateKey(tlsKey)
			if err != nil {
				return fmt.Errorf("--tls-key: %w", err)
			}
			if created {
				fmt.Fprintf(cmd.ErrOrStderr(), "created a new TLS key in %s\n", tlsKey)
			}
			fp, err := tunneltls.FingerprintOf(key.Public())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), fp)
			return nil
		},
	}
	cmd.Flags().StringVar(&tlsKey, "tls-key", "", "the agent's private key (PEM; required)")
	cmd.MarkFlagRequired("tls-key")
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
	// Started for runs: the runs that share it may ask it to leave with
	// the last of them.
	opts.Retirable = true
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
	s.LogListening(ln.Addr(), "idle_exit", f.idleExit)
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
