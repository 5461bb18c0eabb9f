package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/sandbox/container"
	"github.com/trafficpolice/trafficpolice/sandbox/launch"
)

// Options describe one run.
type Options struct {
	Policy *policy.Policy
	// Agent is the agent's tunnel, already connected; nil without agent.
	Agent Agent
	// Incoming says which of the pod's incoming traffic the app takes
	// through Agent.
	Incoming config.Incoming
	// Argv is the app's command line.
	Argv []string
	// Env is the app's environment, nil for this process's; trafficpolice's
	// own secrets (the agent's token) are left out of it, and out of
	// Container.Env.
	Env []string
	Dir string
	// CapAdd are capabilities the app gets on top of Docker's default set
	// (launch.DefaultCapabilities), for a plain process and a container
	// alike: names as launch.ParseCapabilities takes them.
	CapAdd []string
	// FlowLog is a path for the JSON flow log; "" for none.
	FlowLog string
	// MTU of the sandbox's TUN; 0 for the default.
	MTU int
	// NoIPv6 leaves IPv6 out of the sandbox.
	NoIPv6 bool
	// NoKernelPath sends every flow through the router: without it, a
	// root run hands the flows its rules send local by address or port to
	// the kernel (package kernelpath).
	NoKernelPath bool
	// NoKernelSockets takes every TCP connection through the TUN and the
	// router's netstack: without it, a run (root or rootless) holds each
	// new connection's SYN in a queue while the router dials and then
	// hands the app's connection to the router as a kernel socket
	// (router.KernelSockets).
	NoKernelSockets bool
	// NoDNSCache asks the cluster for every name the app looks up: by
	// default the router keeps the cluster's answers for their TTL.
	NoDNSCache bool
	// Rootless runs the sandbox in a user namespace of its own, as the user
	// who runs trafficpolice (launch.StartHolder): what a user who is not
	// root gets, and what root gets when asked. The app runs as that user
	// with no capabilities.
	Rootless bool
	// DebugListen, if set, is a HOST:PORT on the host's loopback serving
	// net/http/pprof and the router's counters (see serveDebug).
	DebugListen string
	// Image, when set, runs Argv in a container of this image through
	// containerd (sandbox/container) instead of as a plain process;
	// Container says how (mounts, workdir, env, daemon).
	Image     string
	Container container.Options

	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Progress       *Progress
	Logger         *slog.Logger
	// HostResolvConf and HostHosts are the host's resolver files; "" for
	// /etc/resolv.conf and /etc/hosts.
	HostResolvConf, HostHosts string
	// Started, if set, is told the namespace name once the app runs (tests
	// use it to look inside).
	Started func(namespace string, pid int)

	// kernel is the run's kernel path, once it is set up.
	kernel *kernelPath
	// runID is the run's id (its record's), which tags its rules.
	runID string
}

// Agent is what a run needs of the tunnel to the agent: the router's
// remote side, the pod's facts that the sandbox copies, and incoming
// traffic. *client.Client has it.
type Agent interface {
	router.Remote
	// Facts describe the pod, as its agent reported them.
	Facts() client.Facts
	IncomingAgent
}

// Run runs the app in a fresh sandbox and returns its exit status (128+N
// when a signal N ended it). The error is for failures of the sandbox
// itself; everything created is removed before Run returns.
func Run(ctx context.Context, o Options) (int, error) {
	if len(o.Argv) == 0 {
		return 0, errors.New("no command to run: give one, as in `trafficpolice sandbox run ./app --its-flags`")
	}
	if _, err := launch.ParseCapabilities(o.CapAdd); err != nil {
		return 0, fmt.Errorf("Options.CapAdd: %w", err)
	}
	o = o.withDefaults()
	if cleaned, err := Collect(); err != nil {
		o.Logger.Warn("cleaning up after earlier runs", "err", err)
	} else if len(cleaned) > 0 {
		o.Progress.Note("removed what %d earlier killed run(s) left behind", len(cleaned))
	}
	if o.Rootless && o.Image != "" {
		return 0, errors.New("--image needs root: containers run through the system's containerd, which a rootless run cannot reach; run with sudo (rootless containerd is not supported yet)")
	}
	rec, err := newRecord(o.Rootless, !o.Rootless && !o.NoKernelPath)
	if err != nil {
		return 0, err
	}
	o.runID = rec.ID
	defer func() {
		if err := rec.teardown(); err != nil {
			o.Logger.Error("teardown", "err", err)
			fmt.Fprintf(stderrOf(o), "trafficpolice: cleaning up: %v (run `trafficpolice sandbox gc` to retry)\n", err)
		}
	}()

	done := o.Progress.Step("namespace ready")
	ns, tun, pre, err := buildSpace(rec, o)
	done(err)
	if err != nil {
		return 0, err
	}
	// Before the teardown: an app that was never started leaves no helper.
	defer pre.Abandon()
	defer tun.Close()
	if h, ok := ns.(heldSpace); ok {
		defer h.Close()
	}
	if kp := startKernelPath(rec, ns, o); kp != nil {
		defer func() {
			if err := kp.Close(); err != nil {
				o.Logger.Error("remove the kernel path", "err", err)
				return // the teardown tries again
			}
			rec.KernelPath = false
		}()
		o.kernel = kp
	}
	files, err := writeResolverFiles(rec.dir(), o)
	if err != nil {
		return 0, err
	}
	stop, err := startServices(ctx, ns, tun, o)
	if err != nil {
		return 0, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()
	if o.Agent == nil {
		o.Progress.Note("no agent or target: flows go out from this host unless a rule blocks them; the host's loopback only through a --local rule or ignore_localhost")
	}
	code, err := runApp(ctx, ns, files, pre, o)
	stopped = true
	if ferr := stop(); ferr != nil && err == nil {
		// An audit log that silently loses lines is worse than none.
		return code, fmt.Errorf("%s is incomplete (the app exited with status %d): %w", o.FlowLog, code, ferr)
	}
	return code, err
}

// kernelNamed is the kernel path's Named for the router; nil without one.
func (o Options) kernelNamed() func(netip.Addr, bool, time.Time) error {
	if o.kernel == nil {
		return nil
	}
	return o.kernel.Named
}

// withDefaults fills in the zero values of o.
func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HostResolvConf == "" {
		o.HostResolvConf = "/etc/resolv.conf"
	}
	if o.HostHosts == "" {
		o.HostHosts = "/etc/hosts"
	}
	o.Env = appEnv(o.Env)
	if o.Container.Env != nil {
		o.Container.Env = appEnv(o.Container.Env)
	}
	return o
}

// newRecord names a new run and writes its record before anything is
// created, so that whatever exists can always be found and removed;
// kernelPath says the run will set up a kernel path (host rules and a link
// named after its id).
func newRecord(rootless, kernelPath bool) (*record, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	rec := &record{ID: id, PID: os.Getpid(), PIDStart: processStart(os.Getpid()), Created: time.Now(), Base: stateDir(), KernelPath: kernelPath}
	if !rootless {
		rec.Namespace = NamespacePrefix + id
	}
	if err := writeRecord(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// startServices starts what serves the app while it runs: the router on
// the TUN, the watch of its listening ports, incoming traffic and the debug
// server. The returned function stops them, incoming first: the pod gets
// its ports back before anything else is torn down; its error says which
// flow-log records could not be written.
func startServices(ctx context.Context, ns space, tun *os.File, o Options) (stop func() error, err error) {
	var stops []func()
	var flowLogErr func() error
	stopAll := func() error {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		if flowLogErr != nil {
			return flowLogErr()
		}
		return nil
	}
	// stopAll, not stop: a failing return sets stop to nil before this runs.
	defer func() {
		if err != nil {
			stopAll()
		}
	}()
	done := o.Progress.Step("router up")
	rt, watch, err := startRouter(ctx, ns, tun, o)
	done(err)
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() { rt.Close() }, watch.stop)
	flowLogErr = rt.FlowLogErr
	if kp := o.kernel; kp != nil && kp.stopWatch != nil {
		// Stopped before the router closes its log: the flows still open
		// are written as the run ends.
		kp.log.Store(rt)
		var watchErr error
		stops = append(stops, func() { watchErr = kp.stopWatch() })
		flowLogErr = func() error { return errors.Join(watchErr, rt.FlowLogErr()) }
	}
	in, err := newIncoming(ns, o, o.Agent)
	if err != nil {
		return nil, err
	}
	if in != nil {
		in.start(ctx)
		stops = append(stops, in.stop)
		watch.watchTCP(in.update)
	}
	if o.DebugListen != "" {
		dctx, stopDebug := context.WithCancel(ctx)
		stops = append(stops, stopDebug)
		addr, err := serveDebug(dctx, o.DebugListen, rt, o.Logger)
		if err != nil {
			return nil, err
		}
		o.Progress.Note("debug server on http://%s/debug/pprof/", addr)
	}
	return stopAll, nil
}

func dupFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("TUN descriptor: %w", err)
	}
	dup := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("TUN descriptor: %w", err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("duplicate the TUN descriptor: %w", dupErr)
	}
	return dup, nil
}

func stderrOf(o Options) io.Writer {
	if o.Stderr != nil {
		return o.Stderr
	}
	return os.Stderr
}

func newID() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random run id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// buildSpace creates the app's namespace and its TUN: a named namespace,
// or for a rootless run a holder process, recorded before anything else
// happens so that a killed run's holder is found. For a named namespace it
// also starts the app's init helper as soon as the namespace exists, so
// that the helper's start-up overlaps the namespace's set-up (nil when the
// app will be started otherwise: see prestartable).
func buildSpace(rec *record, o Options) (space, *os.File, *launch.Prestarted, error) {
	link := netns.SandboxLink{MTU: o.MTU, NoIPv6: o.NoIPv6, Offload: true}
	if o.Rootless {
		h, tun, err := launch.StartHolder(launch.HolderSpec{Link: link, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr})
		if err != nil {
			return nil, nil, nil, err
		}
		rec.Holder = &heldRecord{PID: h.Pid(), PIDStart: processStart(h.Pid()), Netns: h.NetnsID()}
		if err := writeRecord(rec); err != nil {
			tun.Close()
			h.Close()
			return nil, nil, nil, err
		}
		return heldSpace{h}, tun, nil, nil
	}
	name := rec.Namespace
	ns, err := netns.Create(name)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create network namespace %s: %w", name, err)
	}
	var pre *launch.Prestarted
	if prestartable(o) {
		// Not fatal: runApp starts a helper of its own without one.
		if pre, err = launch.Prestart(o.Stdin, o.Stdout, o.Stderr); err != nil {
			o.Logger.Debug("prestart the app's init helper", "err", err)
		}
	}
	tun, err := netns.SetupSandbox(ns, link)
	if err != nil {
		pre.Abandon()
		return nil, nil, nil, fmt.Errorf("set up the sandbox's TUN in %s: %w", name, err)
	}
	return namedSpace{ns}, tun, pre, nil
}

// prestartable says whether the app's init helper may be started before
// the app's spec is known: a plain process in a named namespace, not on a
// terminal (the helper would take the terminal from trafficpolice while
// the sandbox is still being set up).
func prestartable(o Options) bool {
	return !o.Rootless && o.Image == "" && terminalOf(o.Stdin) == nil
}

type resolverFiles struct{ resolvConf, hosts string }

// writeResolverFiles writes the sandbox's resolv.conf (the router's DNS, the
// pod's search list and ndots, or the host's) and a minimal hosts file: the
// host's own /etc/hosts entries must not answer for the app, or names the
// cluster should resolve would resolve locally behind the policy's back.
func writeResolverFiles(dir string, o Options) (resolverFiles, error) {
	var search []string
	var options []string
	if o.Agent != nil {
		f := o.Agent.Facts()
		search = f.SearchDomains
		if f.Ndots > 0 {
			options = append(options, fmt.Sprintf("ndots:%d", f.Ndots))
		}
		options = append(options, f.Options...)
	} else if cfg, err := dns.ClientConfigFromFile(o.HostResolvConf); err == nil {
		search = cfg.Search
		if cfg.Ndots != 1 {
			options = append(options, fmt.Sprintf("ndots:%d", cfg.Ndots))
		}
	}
	o.Policy.SetSearchDomains(search)
	var b strings.Builder
	b.WriteString("# written by trafficpolice: the sandbox's DNS is its router\n")
	fmt.Fprintf(&b, "nameserver %s\n", netns.DNSAddr4)
	if !o.NoIPv6 {
		fmt.Fprintf(&b, "nameserver %s\n", netns.DNSAddr6)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	files := resolverFiles{resolvConf: filepath.Join(dir, "resolv.conf"), hosts: filepath.Join(dir, "hosts")}
	if err := os.WriteFile(files.resolvConf, []byte(b.String()), 0o644); err != nil {
		return files, fmt.Errorf("write the sandbox's resolv.conf: %w", err)
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if o.Agent != nil {
		f := o.Agent.Facts()
		if f.Hostname != "" {
			for _, a := range f.Addresses {
				hosts += fmt.Sprintf("%s\t%s\n", a, f.Hostname)
			}
		}
	}
	if err := os.WriteFile(files.hosts, []byte(hosts), 0o644); err != nil {
		return files, fmt.Errorf("write the sandbox's hosts file: %w", err)
	}
	// The app may run as the invoking user: it must be able to read them.
	os.Chmod(dir, 0o755)
	return files, nil
}

func startRouter(ctx context.Context, ns space, tun *os.File, o Options) (*router.Router, *listenerWatch, error) {
	mtu := o.MTU
	if mtu == 0 {
		mtu = netns.DefaultMTU
	}
	// tun.Fd() would switch the file to blocking mode; the netstack wants
	// its own non-blocking descriptor of the same open file.
	fd, err := dupFD(tun)
	if err != nil {
		return nil, nil, err
	}
	link, err := router.NewTUNEndpoint(fd, uint32(mtu))
	if err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	ks := openKernelSockets(ns, o)
	watched := ns
	if ks != nil {
		watched = hidePort{ns, ks.port()}
	}
	watch := newListenerWatch(watched, o.Logger)
	var flowLog io.Writer
	if o.FlowLog != "" {
		f, err := os.OpenFile(o.FlowLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("open the flow log: %w", err)
		}
		flowLog = f
	}
	dnsAddrs := []netip.Addr{netns.DNSAddr4}
	if !o.NoIPv6 {
		dnsAddrs = append(dnsAddrs, netns.DNSAddr6)
	}
	cfg := router.Config{
		Link:   link,
		Policy: o.Policy,
		DialSandbox: func(ctx context.Context, network, address string) (net.Conn, error) {
			return ns.Dial(ctx, network, address)
		},
		AppListens:    watch.listens,
		LoopbackAlias: netns.AliasToLoopback,
		DNSAddrs:      dnsAddrs,
		LocalResolver: router.NewHostResolver(o.HostResolvConf, o.HostHosts),
		FlowLog:       flowLog,
		Named:         o.kernelNamed(),
		NoDNSCache:    o.NoDNSCache,
		Logger:        o.Logger,
	}
	if ks != nil {
		cfg.KernelSockets = &ks.KernelSockets
	}
	if o.Agent != nil {
		cfg.Remote = o.Agent
		cfg.SearchDomains = o.Agent.Facts().SearchDomains
	}
	if hc, err := dns.ClientConfigFromFile(o.HostResolvConf); err == nil {
		cfg.HostSearchDomains = hc.Search
	}
	rt, err := router.New(cfg)
	if err != nil {
		unix.Close(fd)
		if f, ok := flowLog.(*os.File); ok {
			f.Close()
		}
		if ks != nil {
			ks.close()
		}
		return nil, nil, err
	}
	rt.OnClose(func() { unix.Close(fd) })
	if f, ok := flowLog.(*os.File); ok {
		rt.OnClose(func() { f.Close() }) // after the router's last record
	}
	if err := rt.Start(); err != nil {
		rt.Close()
		return nil, nil, err
	}
	if ks != nil {
		// The router reads the queue now; until the rules are in, SYNs
		// go to the TUN, and so they do if the rules cannot be added.
		if err := ks.install(); err != nil {
			o.Logger.Warn("kernel sockets off: new connections go through the netstack", "err", err)
		} else {
			o.Logger.Info("kernel sockets on: the app's TCP connections are taken as kernel sockets, dial first")
		}
	}
	watch.start(ctx)
	return rt, watch, nil
}

// runApp starts the app in the namespace, forwards signals to it and waits.
// pre, if not nil, is the init helper buildSpace started for it.
func runApp(ctx context.Context, ns space, files resolverFiles, pre *launch.Prestarted, o Options) (int, error) {
	uid, gid, err := launch.CredentialsFromSudo()
	if err != nil {
		return 0, err
	}
	if o.Rootless {
		uid, gid = nil, nil // the app runs as the user who runs us
	}
	spec := launch.Spec{
		NetnsPath:  ns.Path(),
		ResolvConf: files.resolvConf,
		Hosts:      files.hosts,
		Argv:       o.Argv,
		Env:        o.Env,
		Dir:        o.Dir,
		UID:        uid,
		GID:        gid,
		CapAdd:     o.CapAdd,
		Stdin:      o.Stdin,
		Stdout:     o.Stdout,
		Stderr:     o.Stderr,
		Terminal:   terminalOf(o.Stdin),
	}
	// Signals are caught before the app starts, so none is lost between.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if o.Image != "" {
		return runContainer(ctx, ns, files, o, uid, gid, sigs)
	}

	done := o.Progress.Step("starting " + strings.Join(o.Argv, " "))
	var cmd *exec.Cmd
	switch h, held := ns.(heldSpace); {
	case held:
		cmd, err = h.StartApp(spec)
	case pre != nil && spec.Terminal == nil:
		cmd, err = pre.Start(spec)
	default:
		pre.Abandon() // the app went to a terminal since: it needs a helper of its own
		cmd, err = launch.Start(spec)
	}
	var startErr *launch.StartError
	if errors.As(err, &startErr) && startErr.ExitCode != 0 {
		// The app could not be started (not found, not executable): exit
		// as a shell would, 127 or 126, with the shell's message.
		done(nil)
		fmt.Fprintf(stderrOf(o), "trafficpolice: %v\n", startErr)
		return startErr.ExitCode, nil
	}
	done(err)
	if err != nil {
		return 0, err
	}
	if o.Started != nil {
		o.Started(ns.Name(), cmd.Process.Pid)
	}
	waited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		if spec.Terminal != nil {
			launch.ReclaimTerminal(spec.Terminal)
		}
		waited <- err
	}()
	for {
		select {
		case sig := <-sigs:
			cmd.Process.Signal(sig)
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-waited:
				return exitStatus(cmd, err)
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
			}
		case err := <-waited:
			return exitStatus(cmd, err)
		}
	}
}

// terminalOf returns stdin when it is a terminal that is this process's
// controlling terminal in the foreground.
func terminalOf(stdin io.Reader) *os.File {
	f, ok := stdin.(*os.File)
	if !ok {
		return nil
	}
	pgrp, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	if err != nil || pgrp != unix.Getpgrp() {
		return nil // not a terminal, or we run in the background
	}
	return f
}

func exitStatus(cmd *exec.Cmd, err error) (int, error) {
	st := cmd.ProcessState
	if st == nil {
		return 0, fmt.Errorf("wait for the app: %w", err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return st.ExitCode(), nil
}
