package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/netns"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "client" {
		os.Exit(clientMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "peer" {
		os.Exit(peerMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		os.Exit(relayMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "peer-gate" {
		os.Exit(gateMain(os.Args[2:]))
	}
	os.Exit(benchMain(os.Args[1:]))
}

type options struct {
	json       bool
	duration   time.Duration
	rows       *regexp.Regexp
	flows      int
	profile    string
	trace      bool
	tp         string
	noRemote   bool
	verbose    bool
	startRuns  int
	udpWindow  int
	dnsClients int
	pause      bool
	repeat     int
	mtu        int
}

func benchMain(args []string) int {
	var o options
	var rows string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	fs.DurationVar(&o.duration, "duration", time.Second, "how long each throughput, latency and rate measurement runs")
	fs.IntVar(&o.repeat, "repeat", 3, "runs of each throughput, latency and rate pair, alternating kernel and trafficpolice (medians reported)")
	fs.StringVar(&rows, "rows", "", "only run row groups matching this regexp: tcp1, tcp8, rr, crr, udp, dns, mem, start, with a path prefix: local, router, rootless, remote, pasta, slirp4netns, relay (e.g. 'local/tcp')")
	fs.IntVar(&o.flows, "flows", 10000, "idle flows for the memory row")
	fs.StringVar(&o.profile, "profile", "", "save trafficpolice's CPU profile of each throughput, latency, rate and UDP row (and the agent's, on the remote path), and the memory rows' heap profiles, goroutine stacks and memstats, into this directory")
	fs.BoolVar(&o.trace, "trace", false, "with -profile: save execution traces (go tool trace; -pprof=sched shows where goroutines waited to run) instead of CPU profiles")
	fs.StringVar(&o.tp, "trafficpolice", "", "use this trafficpolice binary instead of building one")
	fs.BoolVar(&o.noRemote, "no-remote", false, "skip the remote path (no agent)")
	fs.BoolVar(&o.verbose, "v", false, "say what runs, on stderr")
	fs.IntVar(&o.startRuns, "start-runs", 3, "runs for the start-up rows (median)")
	fs.IntVar(&o.udpWindow, "udp-window", 32, "UDP datagrams in flight")
	fs.IntVar(&o.dnsClients, "dns-clients", 8, "concurrent DNS clients")
	fs.IntVar(&o.mtu, "mtu", 0, "pass --mtu N to `sandbox run` (0: its default)")
	fs.BoolVar(&o.pause, "pause", false, "set everything up, print the addresses and wait for Ctrl-C (for debugging by hand)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./test/bench [flags]   (as root; `make bench`)\n\n"+
			"Measures trafficpolice's router beside the kernel path it replaces, in namespaces of its own,\n"+
			"and the peers pasta and slirp4netns (Debian's passt, slirp4netns) on the same route.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if rows != "" {
		re, err := regexp.Compile(rows)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: --rows %q is not a valid regexp: %v\n", rows, err)
			return 2
		}
		o.rows = re
	}
	if o.flows < 1 || o.duration < 100*time.Millisecond || o.startRuns < 1 || o.repeat < 1 {
		fmt.Fprintln(os.Stderr, "bench: --flows, --repeat and --start-runs must be at least 1, --duration at least 100ms")
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces, veth links, iptables): run `sudo make bench`")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench(ctx, o)
	if rep != nil {
		if o.json {
			rep.writeJSON(os.Stdout)
		} else {
			rep.writeTable(os.Stdout)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func bench(ctx context.Context, o options) (*report, error) {
	say := func(format string, args ...any) {
		if o.verbose {
			fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
		}
	}
	if removed := sweepStale(); len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "bench: removed what killed runs left behind: %s\n", strings.Join(removed, ", "))
	}
	tmp, err := os.MkdirTemp("", "tpb-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	// The sandboxed client may run as another user: it must reach its binary.
	os.Chmod(tmp, 0o755)

	r := &runner{tmp: tmp, profile: o.profile, trace: o.trace, verbose: o.verbose, mtu: o.mtu}
	if r.self, err = copySelf(tmp); err != nil {
		return nil, err
	}
	if o.tp != "" {
		r.tp = o.tp
	} else {
		say("building trafficpolice")
		if r.tp, err = buildTrafficpolice(ctx, tmp); err != nil {
			return nil, err
		}
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return nil, fmt.Errorf("profile directory: %w", err)
		}
	}

	say("building the namespaces")
	topo, err := buildTopology()
	if err != nil {
		return nil, err
	}
	r.topo = topo
	defer func() {
		if err := topo.close(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: cleanup: %v\n", err)
		}
	}()
	srv, err := startServers(topo.srv, topo.srvIP)
	if err != nil {
		return nil, err
	}
	defer srv.close()

	rep := newReport(ctx, o)
	paths := []path{localPath, routerPath, rootlessPath}
	b := &benchRun{r: r, o: o, rep: rep, say: say}
	for _, p := range []path{pastaPath, slirpPath} {
		why := peerMissing(p)
		if why == "" {
			paths = append(paths, p)
		} else if b.wantAny(p) {
			// A peer missing here is not the bench's failure.
			rep.add(Row{Path: p.String(), Name: "all rows", Skipped: why})
		}
	}
	if !o.noRemote {
		if !hasAgentFlag(ctx, r.tp) {
			rep.Notes = append(rep.Notes, "remote path skipped: this trafficpolice has no --agent-address")
		} else {
			say("starting the agent in %s", topo.pod.Name())
			stopAgent, err := r.startAgent(ctx)
			if err != nil {
				return rep, err
			}
			defer stopAgent()
			paths = append(paths, remotePath)
		}
		if b.wantAny(relayPath) {
			say("starting the relays (host and %s)", topo.pod.Name())
			rl, err := r.startRelays(ctx)
			if err != nil {
				return rep, err
			}
			defer rl.stop()
			paths = append(paths, relayPath)
		}
	}
	if o.pause {
		fmt.Fprintf(os.Stderr, "bench: pod netns %s (%s), server netns %s (%s), agent %s (token %s), binaries in %s; Ctrl-C ends\n",
			topo.pod.Name(), topo.podIP, topo.srv.Name(), topo.srvIP, r.agentAddr, r.token, tmp)
		<-ctx.Done()
		return nil, nil
	}
	for _, p := range paths {
		if err := b.path(ctx, p); err != nil {
			return rep, err
		}
	}
	if r.restored > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("another program turned IPv4 forwarding off %d time(s) during the run (net.ipv4.ip_forward written?); the bench turned it back on for its links, but a row measured meanwhile may have failed", r.restored))
	}
	return rep, ctx.Err()
}

// copySelf copies this program into dir, where the sandboxed app (maybe
// another user) can run it; `go run` leaves it in a private directory.
func copySelf(dir string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this program: %w", err)
	}
	src, err := os.Open(exe)
	if err != nil {
		return "", fmt.Errorf("open this program: %w", err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "bench")
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return "", fmt.Errorf("copy this program: %w", err)
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return "", fmt.Errorf("copy this program: %w", err)
	}
	return dst, f.Close()
}

func buildTrafficpolice(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "trafficpolice")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/trafficpolice")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/trafficpolice: %v\n%s", err, b)
	}
	return out, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/trafficpolice/trafficpolice\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the bench from inside the trafficpolice module (or pass --trafficpolice)")
		}
		dir = parent
	}
}

func hasAgentFlag(ctx context.Context, tp string) bool { return hasFlag(ctx, tp, "--agent-address") }

// hasFlag reports whether tp's sandbox run takes flag.
func hasFlag(ctx context.Context, tp, flag string) bool {
	out, err := exec.CommandContext(ctx, tp, "sandbox", "run", "--help").CombinedOutput()
	return err == nil && strings.Contains(string(out), flag)
}

// startAgent runs `trafficpolice agent` in the pod netns, resolving with a
// resolv.conf that names the bench's DNS server, and waits until it listens.
func (r *runner) startAgent(ctx context.Context) (stop func(), err error) {
	r.token = r.topo.id + "-" + fmt.Sprint(time.Now().UnixNano())
	tokenFile := filepath.Join(r.tmp, "token")
	if err := os.WriteFile(tokenFile, []byte(r.token), 0o600); err != nil {
		return nil, err
	}
	resolv := filepath.Join(r.tmp, "pod-resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+r.topo.srvIP.String()+"\n"), 0o644); err != nil {
		return nil, err
	}
	hosts := filepath.Join(r.tmp, "pod-hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		return nil, err
	}
	r.agentAddr = net.JoinHostPort(r.topo.podIP.String(), "7777")
	args := []string{"agent", "--listen", r.agentAddr, "--token-file", tokenFile, "--resolv-conf", resolv, "--hosts", hosts}
	// The remote rows go through TLS, as a run on --agent-address does,
	// where this trafficpolice has it.
	if key := filepath.Join(r.tmp, "agent.key"); hasFlag(ctx, r.tp, "--agent-fingerprint") {
		out, err := exec.CommandContext(ctx, r.tp, "agent", "fingerprint", "--tls-key", key).Output()
		if err != nil {
			return nil, fmt.Errorf("the agent's fingerprint: %w", err)
		}
		r.pin = strings.TrimSpace(string(out))
		args = append(args, "--tls-key", key)
	}
	actx, cancel := context.WithCancel(ctx)
	// Its debug server, on the pod's loopback, gives the memory rows the
	// agent's side.
	r.agentDebug = "127.0.0.1:7778"
	args = append(args, "--debug-listen", r.agentDebug)
	cmd := exec.CommandContext(actx, r.tp, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	logBuf := new(lockedBuffer)
	cmd.Stderr = logBuf
	if err := r.topo.pod.Do(cmd.Start); err != nil {
		cancel()
		return nil, fmt.Errorf("start the agent: %w", err)
	}
	stop = func() { cancel(); cmd.Wait() }
	r.agentPID = cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.agentAddr, time.Second)
		if err == nil {
			c.Close()
			return stop, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return nil, fmt.Errorf("the agent does not listen on %s: %v\n%s", r.agentAddr, err, logBuf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// benchRun measures the rows of one path.
type benchRun struct {
	r   *runner
	o   options
	rep *report
	say func(string, ...any)
}

func (b *benchRun) want(p path, group string) bool {
	switch {
	case p == rootlessPath || p.isPeer():
		// The rootless path differs from the local one only in where the
		// sandbox's namespaces live, and the peers are the local path's
		// competition: the rows that compare them.
		switch group {
		case "tcp1", "rr", "crr", "udp":
		default:
			return false
		}
	case p == relayPath:
		// The floor under the remote path's rows.
		switch group {
		case "tcp1", "rr", "crr", "udp", "dns":
		default:
			return false
		}
	case p == routerPath:
		// What the router costs where the kernel path is not taken (names,
		// a host that does not forward), and the router's memory per flow.
		switch group {
		case "tcp1", "rr", "crr", "udp", "mem":
		default:
			return false
		}
	case p == localPath && group == "mem":
		return false // the kernel holds the local path's flows: see the router path
	}
	return b.o.rows == nil || b.o.rows.MatchString(p.String()+"/"+group)
}

// wantAny says some row group of p is to run.
func (b *benchRun) wantAny(p path) bool {
	for _, g := range []string{"tcp1", "tcp8", "rr", "crr", "udp", "dns", "mem", "start"} {
		if b.want(p, g) {
			return true
		}
	}
	return false
}

// pair runs the same client on the kernel path and on p, alternating,
// --repeat times, and returns each side's medians: the machine's load
// drifts, and a pair measured side by side shares the drift.
func (b *benchRun) pair(ctx context.Context, p path, args []string, profile string) (kern, tp clientResult, err error) {
	return b.pairArgs(ctx, p, args, args, profile)
}

// pairArgs is pair with different client arguments on each side.
func (b *benchRun) pairArgs(ctx context.Context, p path, kArgs, tArgs []string, profile string) (kern, tp clientResult, err error) {
	var ks, ts []clientResult
	for i := range b.o.repeat {
		b.say("%s: %s (kernel)", p, strings.Join(kArgs, " "))
		k, err := b.r.run(ctx, kernelPath, kArgs, "", 0)
		if err != nil {
			return kern, tp, fmt.Errorf("kernel path, %s: %w", strings.Join(kArgs, " "), err)
		}
		b.say("%s: %s (%s)", p, strings.Join(tArgs, " "), p.tool())
		prof := ""
		if i == 0 {
			prof = profile
		}
		t, err := b.r.run(ctx, p, tArgs, prof, b.o.duration-300*time.Millisecond)
		if err != nil {
			return kern, tp, fmt.Errorf("%s path, %s: %w", p, strings.Join(tArgs, " "), err)
		}
		ks, ts = append(ks, k), append(ts, t)
	}
	return medianResult(ks), medianResult(ts), nil
}

// medianResult takes each figure's median over runs and adds up errors.
func medianResult(rs []clientResult) clientResult {
	field := func(get func(clientResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		return median(v)
	}
	out := clientResult{
		Bps:  field(func(r clientResult) float64 { return r.Bps }),
		Rate: field(func(r clientResult) float64 { return r.Rate }),
		P50:  field(func(r clientResult) float64 { return r.P50 }),
		P99:  field(func(r clientResult) float64 { return r.P99 }),
		P999: field(func(r clientResult) float64 { return r.P999 }),
	}
	for _, r := range rs {
		out.Count += r.Count
		out.Errors += r.Errors
		if out.FirstError == "" {
			out.FirstError = r.FirstError
		}
	}
	return out
}

func (b *benchRun) path(ctx context.Context, p path) error {
	t := b.r.topo
	at := func(port int) string { return net.JoinHostPort(t.srvIP.String(), fmt.Sprint(port)) }
	dur := b.o.duration.String()
	// A failing row is reported and the others still run.
	fail := func(name string, err error) {
		b.rep.add(Row{Path: p.String(), Name: name, Error: err.Error()})
	}
	for _, tc := range []struct {
		group string
		flows int
	}{{"tcp1", 1}, {"tcp8", 8}} {
		if !b.want(p, tc.group) {
			continue
		}
		for _, dir := range []string{"up", "down"} {
			name := fmt.Sprintf("TCP %d flow%s %sload", tc.flows, plural(tc.flows), dir)
			args := []string{"tcp-" + dir, "-addr", at(portBulk), "-flows", fmt.Sprint(tc.flows), "-dur", dur}
			kern, tp, err := b.pair(ctx, p, args, fmt.Sprintf("%s-%s-%s", p, tc.group, dir))
			if err != nil {
				fail(name, err)
				continue
			}
			b.rep.add(Row{Path: p.String(), Name: name, Unit: "Gbit/s", TP: tp.Bps / 1e9, Kernel: kern.Bps / 1e9, Higher: true})
		}
	}
	if b.want(p, "rr") {
		for _, size := range []int{1, 1024} {
			label := "1 B"
			if size == 1024 {
				label = "1 KiB"
			}
			args := []string{"rr", "-addr", at(portEcho), "-size", fmt.Sprint(size), "-dur", dur}
			kern, tp, err := b.pair(ctx, p, args, fmt.Sprintf("%s-rr-%d", p, size))
			if err != nil {
				fail("latency "+label, err)
				continue
			}
			for _, q := range []struct {
				name    string
				tp, krn float64
			}{{"p50", tp.P50, kern.P50}, {"p99", tp.P99, kern.P99}, {"p999", tp.P999, kern.P999}} {
				b.rep.add(Row{Path: p.String(), Name: fmt.Sprintf("latency %s %s", label, q.name), Unit: "µs", TP: q.tp, Kernel: q.krn, Added: true})
			}
		}
	}
	if b.want(p, "crr") {
		args := []string{"crr", "-addr", at(portCRR), "-conc", "32", "-dur", dur}
		kern, tp, err := b.pair(ctx, p, args, fmt.Sprintf("%s-crr", p))
		if err != nil {
			fail("new connections (32 clients)", err)
		} else {
			row := Row{Path: p.String(), Name: "new connections (32 clients)", Unit: "conn/s", TP: tp.Rate, Kernel: kern.Rate, Higher: true}
			if tp.Errors > 0 || kern.Errors > 0 {
				row.Note = fmt.Sprintf("failed: %d router, %d kernel (%s%s)", tp.Errors, kern.Errors, tp.FirstError, kern.FirstError)
			}
			b.rep.add(row)
		}
	}
	if b.want(p, "udp") {
		for _, size := range []int{64, 1400} {
			name := fmt.Sprintf("UDP %d B echoes", size)
			args := []string{"udp", "-addr", at(portUDP), "-size", fmt.Sprint(size), "-conc", fmt.Sprint(b.o.udpWindow), "-dur", dur}
			kern, tp, err := b.pair(ctx, p, args, fmt.Sprintf("%s-udp-%d", p, size))
			if err != nil {
				fail(name, err)
				continue
			}
			b.rep.add(Row{Path: p.String(), Name: name, Unit: "dgram/s", TP: tp.Rate, Kernel: kern.Rate, Higher: true})
		}
	}
	if b.want(p, "dns") {
		if err := b.dns(ctx, p); err != nil {
			fail("DNS queries", err)
		}
	}
	if b.want(p, "mem") {
		if err := b.memory(ctx, p, at(portHold)); err != nil {
			fail("idle flows", err)
		}
	}
	if b.want(p, "start") {
		if err := b.startup(ctx, p, at(portCRR)); err != nil {
			fail("start-up", err)
		}
	}
	return ctx.Err()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// dns: the kernel path asks the bench's DNS server directly; the sandbox
// asks the router's DNS, which answers a local name from the host's
// /etc/hosts (local path) or asks the agent, whose resolver asks the same
// DNS server from the pod (remote path).
func (b *benchRun) dns(ctx context.Context, p path) error {
	t := b.r.topo
	dur := b.o.duration.String()
	conc := fmt.Sprint(b.o.dnsClients)
	kArgs := []string{"dns", "-addr", net.JoinHostPort(t.srvIP.String(), "53"), "-name", "bench.test", "-conc", conc, "-dur", dur}
	if p == relayPath {
		// The floor under the uncached remote row: the same queries through
		// the two relays (relayArgs points the client at relay 1).
		kArgs = append(kArgs, "-unique")
		kern, tp, err := b.pair(ctx, p, kArgs, "")
		if err != nil {
			return err
		}
		b.rep.add(Row{Path: p.String(), Name: fmt.Sprintf("DNS queries, each name new (%d clients)", b.o.dnsClients), Unit: "query/s", TP: tp.Rate, Kernel: kern.Rate, Higher: true,
			Note: "the datagrams through the two relays"})
		return nil
	}
	name, note := "localhost", "router answers from the host's /etc/hosts; kernel: a DNS server in the server netns"
	if p == remotePath {
		name, note = "bench.test", "the same name each time: the router's cache answers it after the first (TTL 60 s); kernel: straight to the DNS server"
	}
	tArgs := []string{"dns", "-addr", net.JoinHostPort(netns.DNSAddr4.String(), "53"), "-name", name, "-conc", conc, "-dur", dur}
	kern, tp, err := b.pairArgs(ctx, p, kArgs, tArgs, fmt.Sprintf("%s-dns", p))
	if err != nil {
		return err
	}
	b.rep.add(Row{Path: p.String(), Name: fmt.Sprintf("DNS queries (%d clients)", b.o.dnsClients), Unit: "query/s", TP: tp.Rate, Kernel: kern.Rate, Higher: true, Note: note})
	if p != remotePath {
		return nil
	}
	// The same name again and again is what apps ask, and the router
	// answers it from its cache after the first time; a name never asked
	// before measures the way through the agent every query takes without.
	kArgs = append(kArgs, "-unique")
	tArgs = append(tArgs, "-unique")
	kern, tp, err = b.pairArgs(ctx, p, kArgs, tArgs, fmt.Sprintf("%s-dns-unique", p))
	if err != nil {
		return err
	}
	b.rep.add(Row{Path: p.String(), Name: fmt.Sprintf("DNS queries, each name new (%d clients)", b.o.dnsClients), Unit: "query/s", TP: tp.Rate, Kernel: kern.Rate, Higher: true,
		Note: "no cache can answer: router → agent → the DNS server every time"})
	return nil
}

// memory opens flows idle connections (each has carried one byte each way)
// and reports trafficpolice's resident memory and goroutines per flow
// (after a garbage collection), beside the kernel's slab growth per flow
// on the kernel path (both ends' sockets and the NAT's conntrack entry).
func (b *benchRun) memory(ctx context.Context, p path, addr string) error {
	n := b.o.flows
	args := []string{"hold", "-addr", addr, "-n", fmt.Sprint(n)}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	b.say("%s: %d idle flows (kernel)", p, n)
	var slab0, slab1 int64
	kOpen, err := b.holdFlows(ctx, kernelPath, args,
		func(*proc) (err error) { slab0, err = slab(); return err },
		func(*proc) (err error) { slab1, err = slab(); return err })
	if err != nil {
		return fmt.Errorf("kernel path: %w", err)
	}
	b.say("%s: %d idle flows (trafficpolice)", p, n)
	var rss0, rss1, heap0, heap1 int64
	var g0, g1 int
	// On the remote path the agent holds the other end of each flow.
	agent := p == remotePath && b.r.agentPID != 0
	var arss [2]int64
	var aheap [2]int64
	measure := func(pr *proc, r, h *int64, g *int) error {
		var err error
		if *g, *h, err = debugVars(ctx, http.DefaultClient, pr.debugAddr); err != nil {
			return err
		}
		*r, err = rss(pr.cmd.Process.Pid)
		i := 0
		if r == &rss1 {
			i = 1
		}
		if err == nil && agent {
			if _, aheap[i], err = b.r.agentVars(ctx); err == nil {
				arss[i], err = rss(b.r.agentPID)
			}
		}
		if err == nil && b.o.profile != "" {
			// What the flows hold: the router's (and agent's) heap,
			// stacks and memstats, before and after they open.
			prefix := filepath.Join(b.o.profile, fmt.Sprintf("%s-mem%d", p, i))
			err = saveMemProfiles(ctx, http.DefaultClient, pr.debugAddr, prefix)
			if err == nil && agent {
				err = saveMemProfiles(ctx, b.r.agentClient(), b.r.agentDebug, prefix+"-agent")
			}
		}
		return err
	}
	tOpen, err := b.holdFlows(ctx, p, args,
		func(pr *proc) error {
			if err := waitDebug(ctx, pr.debugAddr); err != nil {
				return err
			}
			return measure(pr, &rss0, &heap0, &g0)
		},
		func(pr *proc) error { return measure(pr, &rss1, &heap1, &g1) })
	if err != nil {
		return fmt.Errorf("%s path: %w", p, err)
	}
	perFlow := func(a, b int64, k int) float64 { return float64(b-a) / float64(k) / 1024 }
	var short string
	if tOpen < n || kOpen < n {
		short = fmt.Sprintf("; only %d (router) and %d (kernel) of %d opened", tOpen, kOpen, n)
	}
	b.rep.add(Row{Path: p.String(), Name: fmt.Sprintf("memory per idle flow (%d flows)", n), Unit: "KiB",
		TP: perFlow(rss0, rss1, tOpen), Kernel: perFlow(slab0, slab1, kOpen),
		Note: "router: RSS growth after GC; kernel: slab growth (both sockets + conntrack)" + short})
	b.rep.add(Row{Path: p.String(), Name: fmt.Sprintf("Go heap per idle flow (%d flows)", n), Unit: "KiB",
		TP: perFlow(heap0, heap1, tOpen), Note: "live heap after GC (buffers count whole, touched or not)" + short})
	b.rep.add(Row{Path: p.String(), Name: fmt.Sprintf("goroutines per idle flow (%d flows)", n), Unit: "",
		TP: float64(g1-g0) / float64(tOpen), Kernel: 0})
	if agent {
		b.rep.add(Row{Path: p.String(), Name: fmt.Sprintf("agent memory per idle flow (%d flows)", n), Unit: "KiB",
			TP: perFlow(arss[0], arss[1], tOpen), Kernel: perFlow(slab0, slab1, kOpen),
			Note: "agent: RSS growth after GC; kernel: slab growth (both sockets + conntrack)" + short})
		b.rep.add(Row{Path: p.String(), Name: fmt.Sprintf("agent Go heap per idle flow (%d flows)", n), Unit: "KiB",
			TP: perFlow(aheap[0], aheap[1], tOpen), Note: "agent: live heap after GC" + short})
	}
	return nil
}

// holdFlows runs the hold client on p, calling before once it is up and
// after once its flows are open, and returns how many flows were open.
func (b *benchRun) holdFlows(ctx context.Context, p path, args []string, before, after func(*proc) error) (int, error) {
	pr, err := b.r.start(ctx, p, args, p != kernelPath)
	if err != nil {
		return 0, err
	}
	abort := func(err error) (int, error) {
		pr.stdin.Close()
		pr.cmd.Process.Signal(syscall.SIGTERM)
		pr.cmd.Wait()
		return 0, err
	}
	if _, err := pr.expect("ready"); err != nil {
		return 0, err
	}
	// Let the process settle (the sandbox's start-up garbage, listeners).
	time.Sleep(300 * time.Millisecond)
	if err := before(pr); err != nil {
		return abort(err)
	}
	if _, err := io.WriteString(pr.stdin, "go\n"); err != nil {
		return abort(err)
	}
	rest, err := pr.expect("opened")
	if err != nil {
		return 0, err
	}
	opened, err := strconv.Atoi(rest)
	if err != nil || opened < 1 {
		return abort(fmt.Errorf("client opened %q flows", rest))
	}
	time.Sleep(500 * time.Millisecond)
	if err := after(pr); err != nil {
		return abort(err)
	}
	pr.stdin.Close()
	if err := pr.cmd.Wait(); err != nil {
		return 0, fmt.Errorf("%v: %s", err, strings.TrimSpace(pr.stderr.String()))
	}
	if msg := strings.TrimSpace(pr.stderr.String()); msg != "" {
		b.say("%s: %s", p, msg)
	}
	return opened, nil
}

// startup times, over several runs (median), how long after the launch the
// app's main starts and when its first byte from the server arrives.
func (b *benchRun) startup(ctx context.Context, p path, addr string) error {
	measure := func(q path) (first, byteAt []float64, err error) {
		for range b.o.startRuns {
			pr, err := b.r.start(ctx, q, []string{"start", "-addr", addr}, false)
			if err != nil {
				return nil, nil, err
			}
			res, err := pr.wait()
			if err != nil {
				return nil, nil, err
			}
			t0 := pr.started.UnixNano()
			first = append(first, float64(res.StartNS-t0)/1e6)
			byteAt = append(byteAt, float64(res.FirstByteNS-t0)/1e6)
		}
		return first, byteAt, nil
	}
	b.say("%s: start-up (kernel)", p)
	kFirst, kByte, err := measure(kernelPath)
	if err != nil {
		return fmt.Errorf("kernel path: %w", err)
	}
	b.say("%s: start-up (trafficpolice)", p)
	tFirst, tByte, err := measure(p)
	if err != nil {
		return fmt.Errorf("%s path: %w", p, err)
	}
	note := fmt.Sprintf("median of %d; kernel: exec in the pod netns", b.o.startRuns)
	b.rep.add(Row{Path: p.String(), Name: "start → app's first instruction", Unit: "ms", TP: median(tFirst), Kernel: median(kFirst), Note: note})
	b.rep.add(Row{Path: p.String(), Name: "start → first byte from the server", Unit: "ms", TP: median(tByte), Kernel: median(kByte), Note: note})
	return nil
}

// lockedBuffer keeps a process's output; the error path reads it while
// the process may still write.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
