package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/kernelpath"
	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/sandbox/launch"
)

// binDir holds the binaries the tests build (once per test binary);
// TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	launch.MaybeRunInit()
	var err error
	if binDir, err = os.MkdirTemp("", "tp-sandbox-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// Readable by the unprivileged user the app may run as.
	os.Chmod(binDir, 0o755)
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*buildResult{}
)

// buildOnce builds the Go package pkg, statically (CGO_ENABLED=0), into
// binDir/name once per test binary and returns its path.
func buildOnce(t *testing.T, pkg, name string) string {
	t.Helper()
	buildsMu.Lock()
	b := builds[name]
	if b == nil {
		b = &buildResult{}
		builds[name] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() {
		b.path = filepath.Join(binDir, name)
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// probe is the static test client (testdata/probe).
func probe(t *testing.T) string { return buildOnce(t, "./testdata/probe", "probe") }

// cli is the trafficpolice command, built as `make build` builds it.
func cli(t *testing.T) string { return buildOnce(t, "../cmd/trafficpolice", "trafficpolice") }

// hostState is what the host had before a test: the test must leave it so.
// Tests of other packages run at the same time, so the check looks for what
// this test's runs created (their namespaces, records and mounts), plus
// host links.
type hostState struct {
	mu         *sync.Mutex
	namespaces *[]string // the sandbox namespaces this test's runs made
	links      []string
}

var currentState hostState

func snapshot(t *testing.T) hostState {
	t.Helper()
	s := hostState{mu: &sync.Mutex{}, namespaces: &[]string{}}
	links, _ := netlink.LinkList()
	for _, l := range links {
		s.links = append(s.links, l.Attrs().Name)
	}
	return s
}

func (s hostState) add(ns string) {
	s.mu.Lock()
	*s.namespaces = append(*s.namespaces, ns)
	s.mu.Unlock()
}

// cleanCheck records the host's state and checks, after every other
// cleanup of the test, that nothing of the test's runs is left.
func cleanCheck(t *testing.T) hostState {
	t.Helper()
	before := snapshot(t)
	currentState = before
	t.Cleanup(func() { assertClean(t, before) })
	return before
}

func assertClean(t *testing.T, before hostState) {
	t.Helper()
	before.mu.Lock()
	created := append([]string(nil), *before.namespaces...)
	before.mu.Unlock()
	left, _ := netns.List(NamespacePrefix)
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, ns := range created {
		for _, l := range left {
			if l == ns {
				t.Errorf("namespace %s left behind", ns)
			}
		}
		if bytes.Contains(mounts, []byte("/"+ns+" ")) || bytes.Contains(mounts, []byte(StateDir+"/"+strings.TrimPrefix(ns, NamespacePrefix))) {
			t.Errorf("mount of run %s left behind", ns)
		}
		if _, err := os.Stat(filepath.Join(StateDir, strings.TrimPrefix(ns, NamespacePrefix))); err == nil {
			t.Errorf("run record of %s left behind", ns)
		}
		if pids, err := processesIn(ns); err == nil && len(pids) > 0 {
			t.Errorf("processes %v left in %s", pids, ns)
		}
		id := strings.TrimPrefix(ns, NamespacePrefix)
		if _, err := netlink.LinkByName(kernelpath.HostLinkPrefix + id); err == nil {
			t.Errorf("kernel path link %s%s left behind", kernelpath.HostLinkPrefix, id)
		}
		if out, err := exec.Command("iptables-save").Output(); err == nil && bytes.Contains(out, []byte("trafficpolice-kernel-"+id)) {
			t.Errorf("kernel path rules of run %s left behind", id)
		}
	}
	links, _ := netlink.LinkList()
	var extra []string
	for _, l := range links {
		name := l.Attrs().Name
		found := false
		for _, b := range before.links {
			found = found || b == name
		}
		// tpv… are netnstest's veths, which check themselves; other
		// packages' tests make them at the same time as this one runs.
		// tpk… are runs' kernel paths: checked above for this test's runs
		// (other tests' runs have theirs meanwhile).
		if !found && strings.HasPrefix(name, "tp") && !strings.HasPrefix(name, "tpv") && !strings.HasPrefix(name, kernelpath.HostLinkPrefix) {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		t.Errorf("links left on the host: %v", extra)
	}
}

func processesIn(name string) ([]int, error) {
	ns, err := netns.Open(name)
	if err != nil {
		return nil, err
	}
	return netns.Processes(ns)
}

// lockedBuffer is a bytes.Buffer safe for the progress lines and the app's
// output copier writing at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// result is one sandboxed run.
type result struct {
	code   int
	stdout string
	stderr string
	err    error
}

type runOpt func(*Options)

// run runs argv in a sandbox with the given config and extra rules.
func run(t *testing.T, cfg *config.Config, extra ExtraRules, argv []string, opts ...runOpt) result {
	t.Helper()
	if cfg == nil {
		cfg = config.Default()
	}
	pol, err := Policy(cfg, extra, false)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr lockedBuffer
	o := Options{
		Policy: pol, Argv: argv, Env: os.Environ(),
		Stdout: &stdout, Stderr: &stderr,
		Progress: NewProgress(&stderr),
	}
	o.Started = func(ns string, _ int) { currentState.add(ns) }
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code, err := Run(ctx, o)
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String(), err: err}
	t.Logf("run %v: code %d err %v\nstdout: %s\nstderr: %s", argv, code, err, trim(r.stdout), trim(r.stderr))
	return r
}

func trim(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}

// serviceNet is a namespace joined to the host by a veth pair: a stand-in
// for "somewhere the host can reach" that the test itself created.
type serviceNet struct {
	ns       *netns.Namespace
	hostIP   netip.Addr
	svcIP    netip.Addr
	silentIP netip.Addr // routed towards the namespace, dropped there
	hostLink string     // the host's end of the veth
}

func newServiceNet(t *testing.T) *serviceNet {
	t.Helper()
	ns := netnstest.Namespace(t, "tpt-svc")
	netnstest.LoopbackUp(t, ns)
	// A /29 from a range nobody uses here, chosen per test so tests can
	// run side by side.
	b := []byte(netnstest.Suffix(t))
	third := int(b[0])%200 + 20
	base := netip.AddrFrom4([4]byte{10, 213, byte(third), byte(int(b[1]) % 31 * 8)})
	s := &serviceNet{ns: ns, hostIP: base.Next(), svcIP: base.Next().Next()}
	s.silentIP = s.svcIP.Next()
	s.hostLink = netnstest.Veth(t, nil, ns, []netip.Prefix{netip.PrefixFrom(s.hostIP, 29)},
		[]netip.Prefix{netip.PrefixFrom(s.svcIP, 29), netip.PrefixFrom(s.silentIP, 29)}).A
	// The silent address drops every TCP SYN: a destination that never answers.
	s.exec(t, "iptables", "-A", "INPUT", "-d", s.silentIP.String(), "-p", "tcp", "-j", "DROP")
	return s
}

// forward lets the host forward on the service's link, by which replies
// come in: the kernel path then takes flows to the service.
func (s *serviceNet) forward(t *testing.T) {
	t.Helper()
	must(t, netns.WriteSysctl(filepath.Join("net/ipv4/conf", s.hostLink, "forwarding"), "1"))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (s *serviceNet) exec(t *testing.T, argv ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", s.ns.Name()}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", argv, err, out)
	}
}

// start runs a long-lived process in the service namespace until the test ends.
func (s *serviceNet) start(t *testing.T, argv ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", s.ns.Name()}, argv...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%v output:\n%s", argv, out.String())
		}
	})
}

// listen opens a TCP listener inside the service namespace.
func (s *serviceNet) listen(t *testing.T, port int) net.Listener {
	t.Helper()
	return netnstest.Listen(t, s.ns, "tcp", net.JoinHostPort(s.svcIP.String(), fmt.Sprint(port)))
}

// serveEcho echoes every connection.
func serveEcho(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
}

func hostListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func portOf(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

func contains(t *testing.T, s, want string) {
	t.Helper()
	if !strings.Contains(s, want) {
		t.Errorf("output %q does not contain %q", trim(s), want)
	}
}

// waitUntil polls cond until it holds, and fails the test naming what it
// waited for if that takes longer than timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
	}
}
