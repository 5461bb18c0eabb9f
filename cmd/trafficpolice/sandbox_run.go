package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/trafficpolice/trafficpolice/agent/connect"
	"github.com/trafficpolice/trafficpolice/agent/kube"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/sandbox"
	"github.com/trafficpolice/trafficpolice/sandbox/container"
	"github.com/trafficpolice/trafficpolice/sandbox/launch"
)

type runFlags struct {
	config         configFlags
	steal          bool
	extra          sandbox.ExtraRules
	flowLog        string
	mtu            int
	quiet          bool
	verbose        bool
	agentAddress   string
	agentTokenFile string
	agentPin       string
	agentInsecure  bool
	debugListen    string
	capAdd         []string
	rootless       bool
	noKernelPath   bool
	noKernelSocks  bool
	noDNSCache     bool
	kube           kubeFlags
	image          imageFlags
}

func newSandboxRunCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] [--] COMMAND [ARG...]",
		Short: "Run COMMAND in its own network namespace behind the policing router",
		Long: "Run COMMAND in a fresh network namespace whose default route and DNS point at trafficpolice's\n" +
			"router. Each flow goes local (from this host), remote (through the agent, from the target pod)\n" +
			"or is blocked, by the outgoing filter.\n\n" +
			"Runs as root (sudo) or as an ordinary user. Under sudo, COMMAND runs as the invoking user; the\n" +
			"sandbox is a named network namespace. As an ordinary user (rootless, or --rootless as root),\n" +
			"the sandbox lives in a user namespace of its own: that needs unprivileged user namespaces and\n" +
			"a /dev/net/tun the user may open (`trafficpolice doctor` checks both); --image needs root.\n\n" +
			"Everything from COMMAND on is COMMAND's, its flags included, as with sudo and docker run;\n" +
			"a -- before COMMAND is accepted too. Without -f, " + defaultConfigFile + " is read when it\n" +
			"exists. mirrord keys that trafficpolice does not honour print a warning each before the run\n" +
			"starts (--strict refuses them).\n\n" +
			"Exits with COMMAND's status (128+N when it died of signal N; 127 when it is not found, 126\n" +
			"when it cannot be executed); trafficpolice's own failures exit 125.",
		Example: "  trafficpolice sandbox run --local :5432 -- go test ./...\n" +
			"  sudo trafficpolice sandbox run -f config.json ./uwu-app --listen :9999\n" +
			"  sudo trafficpolice sandbox run -t deployment/uwu-app -n shop --steal ./uwu-app\n" +
			"  sudo trafficpolice sandbox run --local :5432 --block prod-db --flow-log flows.jsonl go test ./...\n" +
			"  sudo trafficpolice sandbox run sh -c 'curl -s uwu-service:8080'\n" +
			"  sudo trafficpolice sandbox run --image localhost/dev/bookworm:1 --local :5432 -- make test",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("give the command to run, as in `trafficpolice sandbox run ./app --its-flags`")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSandbox(cmd.Context(), f, args)
		},
	}
	fl := cmd.Flags()
	// The first argument that is not a flag starts COMMAND: its flags are its own.
	fl.SetInterspersed(false)
	f.config.add(fl, true)
	fl.BoolVar(&f.steal, "steal", false, "steal the pod's incoming traffic (feature.network.incoming mode \"steal\")")
	fl.StringArrayVar(&f.extra.Local, "local", nil, "add a local filter rule (repeatable), e.g. :5432 or app-db")
	fl.StringArrayVar(&f.extra.Remote, "remote", nil, "add a remote filter rule (repeatable)")
	fl.StringArrayVar(&f.extra.Block, "block", nil, "refuse flows matching this rule (repeatable)")
	fl.StringVar(&f.flowLog, "flow-log", "", "write one JSON line per finished flow to this file")
	fl.StringVar(&f.agentAddress, "agent-address", "", "HOST:PORT of a running agent (overrides agent.address)")
	fl.StringVar(&f.agentTokenFile, "agent-token-file", "", "file holding the agent's token, and optionally its fingerprint on a second line (default: $"+proto.EnvToken+")")
	fl.StringVar(&f.agentPin, "agent-fingerprint", "", "the running agent's key fingerprint, sha256:... (overrides agent.fingerprint): the tunnel is TLS, the token goes only to that agent")
	fl.BoolVar(&f.agentInsecure, "agent-insecure", false, "connect to a running agent without TLS, in clear (an agent without --tls-key behind a secure channel of your own)")
	fl.IntVar(&f.mtu, "mtu", 0, "MTU of the sandbox's TUN device (default 65520)")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress lines")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log the router's decisions to stderr")
	fl.StringVar(&f.debugListen, "debug-listen", "", "serve pprof and the router's counters on this loopback HOST:PORT")
	fl.MarkHidden("debug-listen")
	fl.StringArrayVar(&f.capAdd, "cap-add", nil, "give the app this capability too (repeatable; e.g. NET_ADMIN, or ALL); the default is Docker's set")
	fl.BoolVar(&f.noKernelPath, "no-kernel-path", false, "send every flow through trafficpolice's router: by default a root run hands the flows its rules send local by address or port to the kernel")
	fl.BoolVar(&f.noKernelSocks, "no-kernel-sockets", false, "take the app's TCP connections through the TUN and the router's netstack: by default a run holds each new connection's SYN while the router dials, then takes the connection as a kernel socket")
	fl.BoolVar(&f.noDNSCache, "no-dns-cache", false, "ask the cluster for every name the app looks up: by default the cluster's answers are kept for their TTL")
	fl.BoolVar(&f.rootless, "rootless", false, "run the sandbox in a user namespace of its own, as when not root (the default when not root)")
	f.kube.add(fl)
	f.kube.complete(cmd)
	f.image.add(fl)
	return cmd
}

// targetlessIncoming turns incoming traffic off for a targetless run
// through Kubernetes: its agent runs in a pod of its own, which nobody
// sends anything to. Mirroring is mirrord's default, so only a steal asked
// for is worth a note. (A running agent, --agent-address, serves its own
// namespace's incoming traffic, target or not.)
func targetlessIncoming(cfg *config.Config, agentAddress string, progress *sandbox.Progress) {
	in := &cfg.Feature.Network.Incoming
	if cfg.Target.Path != "targetless" || agentAddress != "" {
		return
	}
	if in.Mode == config.ModeSteal {
		progress.Note("targetless: there is no pod whose incoming traffic to steal; feature.network.incoming is ignored")
	}
	in.Mode = config.ModeOff
}

func runSandbox(ctx context.Context, f runFlags, argv []string) error {
	cfg, err := f.config.load(os.Stderr)
	if err != nil {
		return err
	}
	if f.steal {
		cfg.Feature.Network.Incoming.Mode = config.ModeSteal
	}
	if err := f.kube.apply(cfg); err != nil {
		return err
	}
	// The running agent's address: the flag's, else the file's.
	agentAddress := connect.Address(connect.Options{Config: cfg, Address: f.agentAddress})
	pol, err := sandbox.Policy(cfg, f.extra, sandbox.HaveRemote(cfg, agentAddress))
	if err != nil {
		return err
	}
	if _, err := f.image.options(nil); err != nil {
		return err
	}
	if _, err := launch.ParseCapabilities(f.capAdd); err != nil {
		return fmt.Errorf("--cap-add: %w", err)
	}
	progress := sandbox.NewProgress(os.Stderr)
	if f.quiet {
		progress.Quiet()
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	pre := preflightEnv(cfg, f.kube, f.agentAddress, f.image.image, f.image.address, rootlessRun(f.rootless))
	// Where the run works comes first, before the checks' notes: under
	// sudo the kubeconfig is not the one root's environment names. A
	// kubeconfig that does not load is the preflight's to report.
	announced := false
	if pre.Kube != nil {
		if access, err := kube.Connect(*pre.Kube); err == nil {
			progress.Note("%s", connect.Where(access, cfg.Target.Path))
			announced = true
		}
	}
	if err := runPreflight(ctx, pre, progress); err != nil {
		return err
	}
	targetlessIncoming(cfg, agentAddress, progress)
	// The target's environment (feature.env) comes after ours: the pod's
	// values win, as in mirrord.
	appEnv := os.Environ()
	hostEnv := len(appEnv)
	var agent sandbox.Agent
	// Bounded: a cluster that no longer answers must not hold up a run.
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	objs, err := connect.CollectStale(cctx, sandbox.RunStateDir())
	ccancel()
	if len(objs) > 0 {
		progress.Note("removed what earlier killed runs left in the cluster: %s", strings.Join(objs, ", "))
	} else if err != nil {
		logger.Warn("cleaning up after earlier runs in the cluster", "err", err)
	}
	run, err := connect.Connect(ctx, connect.Options{
		Config:      cfg,
		Address:     f.agentAddress,
		TokenFile:   f.agentTokenFile,
		Fingerprint: f.agentPin,
		Insecure:    f.agentInsecure,
		Kubeconfig:  f.kube.kubeconfig,
		Context:     f.kube.context,
		Version:     version,
		Progress:    progress,
		Logger:      logger,
		StateDir:    sandbox.RunStateDir(),
		Announced:   announced,
	})
	if err != nil {
		return err
	}
	if run != nil {
		defer run.Close()
		agent = run.Client
		appEnv = append(appEnv, run.Env...)
	}
	wd, _ := os.Getwd()
	// A container gets the image's environment and the target's, not ours.
	ctrOpts, _ := f.image.options(appEnv[hostEnv:])
	code, err := sandbox.Run(ctx, sandbox.Options{
		Image:           f.image.image,
		Container:       ctrOpts,
		Policy:          pol,
		Agent:           agent,
		Incoming:        cfg.Feature.Network.Incoming,
		Argv:            argv,
		Env:             appEnv,
		Dir:             wd,
		CapAdd:          f.capAdd,
		FlowLog:         f.flowLog,
		MTU:             f.mtu,
		DebugListen:     f.debugListen,
		NoIPv6:          false,
		NoKernelPath:    f.noKernelPath,
		NoKernelSockets: f.noKernelSocks,
		NoDNSCache:      f.noDNSCache,
		Rootless:        rootlessRun(f.rootless),
		Stdin:           os.Stdin,
		Stdout:          os.Stdout,
		Stderr:          os.Stderr,
		Progress:        progress,
		Logger:          logger,
	})
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// kubeFlags are sandbox run's Kubernetes flags, as kubectl's.
type kubeFlags struct {
	target, namespace, kubeconfig, context string
}

func (k *kubeFlags) add(fl *pflag.FlagSet) {
	fl.StringVarP(&k.target, "target", "t", "", "target KIND/NAME[/container/C] or targetless (overrides the file's target)")
	fl.StringVarP(&k.namespace, "namespace", "n", "", "the target's namespace (default: the file's, else the context's)")
	fl.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config; under sudo the invoking user's)")
	fl.StringVar(&k.context, "context", "", "kubeconfig context (default: its current context)")
}

// apply puts the flags over the file's configuration and checks the result.
func (k kubeFlags) apply(cfg *config.Config) error {
	if k.target != "" {
		cfg.Target.Path = k.target
	}
	if k.namespace != "" {
		cfg.Target.Namespace = k.namespace
	}
	if k.target == "" && k.namespace == "" {
		return nil
	}
	// The file's checks, for the flags' values.
	doc, _ := json.Marshal(map[string]any{"target": map[string]string{"path": cfg.Target.Path, "namespace": cfg.Target.Namespace}})
	if _, err := config.Parse(doc, config.JSON); err != nil {
		return fmt.Errorf("--target/--namespace: %w", err)
	}
	return nil
}

// imageFlags are `sandbox run --image` and its companions.
type imageFlags struct {
	image     string
	mounts    []string
	workdir   string
	env       []string
	address   string
	namespace string
}

func (f *imageFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.image, "image", "", "run COMMAND in a container of this image (through containerd) instead of on the host")
	fl.StringArrayVar(&f.mounts, "mount", nil, "with --image: bind SRC:DST[:ro] into the container (repeatable); the current folder is bound at its own path unless a mount names it")
	fl.StringVar(&f.workdir, "workdir", "", "with --image: COMMAND's folder in the container (default: the current folder)")
	fl.StringArrayVar(&f.env, "env", nil, "with --image: set K=V in the container (repeatable)")
	fl.StringVar(&f.address, "containerd-address", "", "with --image: containerd's socket (default $"+container.AddressEnv+" or "+container.DefaultAddress+")")
	fl.StringVar(&f.namespace, "containerd-namespace", container.DefaultNamespace, "with --image: containerd namespace holding the image")
}

// options checks the flags; targetEnv (the pod's, from feature.env) goes
// into the container before --env, which wins.
func (f *imageFlags) options(targetEnv []string) (container.Options, error) {
	o := container.Options{Address: f.address, Namespace: f.namespace, Workdir: f.workdir}
	if f.image == "" {
		for name, set := range map[string]bool{"--mount": len(f.mounts) > 0, "--workdir": f.workdir != "", "--env": len(f.env) > 0} {
			if set {
				return o, fmt.Errorf("%s is for containers: add --image IMAGE, or drop %s", name, name)
			}
		}
		return o, nil
	}
	for _, m := range f.mounts {
		mt, err := container.ParseMount(m)
		if err != nil {
			return o, err
		}
		o.Mounts = append(o.Mounts, mt)
	}
	if f.workdir != "" && !strings.HasPrefix(f.workdir, "/") {
		return o, fmt.Errorf("--workdir %q is invalid: want an absolute path inside the container", f.workdir)
	}
	for _, kv := range f.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return o, fmt.Errorf("--env %q is invalid: want K=V", kv)
		}
	}
	o.Env = append(append([]string{}, targetEnv...), f.env...)
	return o, nil
}
