package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/agent/connect"
	"github.com/trafficpolice/trafficpolice/agent/kube"
	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/preflight"
	"github.com/trafficpolice/trafficpolice/sandbox"
	"github.com/trafficpolice/trafficpolice/sandbox/container"
)

func newDoctorCommand() *cobra.Command {
	var (
		cf                                     configFlags
		out                                    outputFlag
		image, containerdAddress, agentAddress string
		kf                                     kubeFlags
		rootless, apparmor                     bool
	)
	cmd := &cobra.Command{
		Use:   "doctor [-f FILE] [--target KIND/NAME] [--image REF] [-o text|json]",
		Short: "Check what a run needs of this host and its cluster, and say how to fix what is missing",
		Long: "Run the checks that `sandbox run` makes before it starts anything: privileges, the TUN device,\n" +
			"network namespaces, nat, the state folder, containerd (with --image), and with a target the\n" +
			"kubeconfig and context, that the cluster answers, and every RBAC permission the run needs.\n" +
			"Each check prints ok, warn or fail, with the fix. Exits 1 when a check fails.",
		Example: "  sudo trafficpolice doctor\n" +
			"  sudo trafficpolice doctor -f .mirrord/mirrord.json\n" +
			"  sudo trafficpolice doctor --target deployment/api -n shop -o json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if apparmor {
				_, err := fmt.Fprint(cmd.OutOrStdout(), preflight.AppArmorProfile)
				return err
			}
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			cfg, err := cf.load(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := kf.apply(cfg); err != nil {
				return err
			}
			env := preflightEnv(cfg, kf, agentAddress, image, containerdAddress, rootlessRun(rootless))
			env.KernelPath = true
			rs := preflight.Run(cmd.Context(), env)
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), rs); err != nil {
					return err
				}
			} else {
				for _, r := range rs {
					fmt.Fprintln(cmd.OutOrStdout(), r)
				}
			}
			if preflight.Failed(rs) {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	cf.add(fl, false)
	out.add(fl)
	fl.StringVar(&image, "image", "", "check for a run with --image (containerd)")
	fl.StringVar(&containerdAddress, "containerd-address", "", "containerd's socket (default $"+container.AddressEnv+" or "+container.DefaultAddress+")")
	fl.StringVar(&agentAddress, "agent-address", "", "the run uses a running agent: no cluster checks")
	fl.BoolVar(&rootless, "rootless", false, "check for a rootless run (the default when not root)")
	fl.BoolVar(&apparmor, "apparmor-profile", false, "print the AppArmor profile that lets trafficpolice create user namespaces where AppArmor restricts them (Ubuntu 23.10+)")
	kf.add(fl)
	kf.complete(cmd)
	return cmd
}

// rootlessRun says whether a run is rootless: always when not root, and
// when root asks for it (--rootless).
func rootlessRun(flag bool) bool { return flag || os.Geteuid() != 0 }

// preflightEnv is what a run with this configuration and these flags
// needs checked.
func preflightEnv(cfg *config.Config, kf kubeFlags, agentAddress, image, containerdAddress string, rootless bool) preflight.Env {
	if containerdAddress == "" {
		containerdAddress = os.Getenv(container.AddressEnv)
	}
	if containerdAddress == "" {
		containerdAddress = container.DefaultAddress
	}
	env := preflight.Env{Euid: -1, Rootless: rootless, StateDir: sandbox.StateDir, Image: image, ContainerdAddress: containerdAddress}
	if os.Geteuid() != 0 {
		env.StateDir = sandbox.UserStateDir()
	}
	direct := connect.Address(connect.Options{Config: cfg, Address: agentAddress}) != ""
	if cfg.Target.Path != "" && !direct {
		access := connect.AccessOptions(connect.Options{Config: cfg, Kubeconfig: kf.kubeconfig, Context: kf.context})
		env.Kube = &access
		kind := ""
		if cfg.Target.Path != "targetless" {
			kind, _, _ = strings.Cut(cfg.Target.Path, "/")
		}
		env.AgentImage = cfg.Agent.Image
		if env.AgentImage == "" {
			env.AgentImage = kube.DefaultAgentImage(connect.AgentImageTag(version))
		}
		env.Cluster = preflight.ClusterNeeds{Namespace: cfg.Target.Namespace, TargetKind: kind,
			AgentNamespace: cfg.Agent.Namespace, Ephemeral: cfg.Agent.Ephemeral, Env: cfg.Feature.Env.Enabled}
	}
	return env
}

// runPreflight stops a run whose host or cluster lacks something it
// needs, before anything is started; warnings become notes.
func runPreflight(ctx context.Context, env preflight.Env, progress *sandbox.Progress) error {
	rs := preflight.Run(ctx, env)
	for _, r := range rs {
		if r.Status == preflight.Warn {
			progress.Note("%s: %s (%s)", r.Check, r.Detail, r.Fix)
		}
	}
	return preflight.FirstFailure(rs)
}
