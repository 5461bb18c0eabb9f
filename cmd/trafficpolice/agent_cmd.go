package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/agent/proto"
)

func newAgentCommand() *cobra.Command {
	var (
		opts      agent.Options
		tokenFile string
		commTO    time.Duration
		natFlag   string
		runFlags  agentRunFlags
	)
	cmd := &cobra.Command{
		Use:   "agent --listen HOST:PORT [--token-file FILE]",
		Short: "Serve tunnels from inside the target pod's network namespace",
		Long: "Serve trafficpolice tunnels: dial TCP and UDP and resolve names from this network namespace\n" +
			"for clients that present the shared token (--token-file, or $" + proto.EnvToken + "), and steal\n" +
			"or mirror the namespace's incoming TCP connections for them (nat rules named " + nat.ChainPrefix + "<id>, removed\n" +
			"on exit; needs NET_ADMIN). The rules are written with the iptables binary where it works, else with\n" +
			"nftables over netlink (--nat-backend). Meant to run inside the target pod's network namespace.",
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
	cmd.MarkFlagRequired("listen")
	return cmd
}
