package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// world is a namespace cluster with a target pod running the agent and a
// sidecar, and a "whoami" service pod; the host reaches the agent only
// through a forwarded loopback port.
type world struct {
	c         *cluster.Cluster
	target    *cluster.Pod
	whoami    *cluster.Pod
	agent     *cluster.Process
	agentAddr string
	token     string
	tokenFile string
	tp        string // the trafficpolice binary
	probe     string
	sidecar   int // port of the target pod's sidecar on 127.0.0.1
	// user, when set, runs `sandbox run` as this ordinary user: rootless.
	user *netnstest.User
	// agentDebug, when set, is the agent's debug server on the pod's
	// loopback (startAgent adds --debug-listen).
	agentDebug string

	// keyFile is the agent's TLS key; fingerprint, its fingerprint, is
	// the token file's second line: every run pins the agent.
	keyFile, fingerprint string
}

// rootless makes the world's runs rootless: they run as an ordinary user
// the test creates, who may read the token and open /dev/net/tun.
func (w *world) rootless(t *testing.T, bins ...string) {
	t.Helper()
	u := netnstest.NewUser(t)
	netnstest.TUNOpenToAll(t)
	if err := os.Chown(w.tokenFile, int(u.UID), int(u.GID)); err != nil {
		t.Fatal(err)
	}
	// The binaries' folders (one per package, in the build folder).
	for _, bin := range append([]string{w.tp, w.probe}, bins...) {
		os.Chmod(filepath.Dir(bin), 0o755)
		os.Chmod(filepath.Dir(filepath.Dir(bin)), 0o755)
	}
	w.user = &u
}

// command is exec.Command for a run: as the world's user, if any.
func (w *world) command(name string, args ...string) *exec.Cmd {
	if w.user != nil {
		return w.user.Command(name, args...)
	}
	return exec.Command(name, args...)
}

const agentPort = 7777

// runDeadline bounds one sandbox run of a test; none takes near it.
const runDeadline = 3 * time.Minute

func newWorld(t *testing.T) *world {
	t.Helper()
	netnstest.RequireRoot(t)
	netnstest.RequireCommand(t, "dig", "dnsutils")
	w := &world{
		c:     cluster.New(t),
		tp:    cluster.BuildApp(t, "./cmd/trafficpolice"),
		probe: cluster.BuildApp(t, "./sandbox/testdata/probe"),
		token: "tok-" + fmt.Sprint(time.Now().UnixNano()),
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	w.tokenFile = filepath.Join(dir, "token")
	w.keyFile = filepath.Join(dir, "agent.key")
	// As an operator would: make the key, print its fingerprint, hand
	// it to clients with the token.
	out, err := exec.Command(w.tp, "agent", "fingerprint", "--tls-key", w.keyFile).Output()
	if err != nil {
		t.Fatalf("trafficpolice agent fingerprint: %v", err)
	}
	w.fingerprint = strings.TrimSpace(string(out))
	if err := os.WriteFile(w.tokenFile, []byte(w.token+"\n"+w.fingerprint+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.target = w.c.AddPod(t, "uwu-app")
	w.whoami = w.c.AddPod(t, "whoami")
	w.c.AddSRV(t, "_whoami._tcp.default.svc.cluster.local", "whoami.default.svc.cluster.local", 7000, 0, 5)
	w.c.AddTXT(t, "whoami-info.default.svc.cluster.local", "served by the cluster")
	w.c.AddHost(t, "whoami6.default.svc.cluster.local", w.whoami.IPv6())

	w.whoami.Start(t, []string{w.probe, "serve-whoami", ":7000", "whoami"})
	w.whoami.Start(t, []string{w.probe, "serve-echo", ":7001"})
	w.whoami.Start(t, []string{w.probe, "serve-bytes", ":7003", fmt.Sprint(100 << 20)})
	// Port 7002 answers nothing: SYNs are dropped.
	if out, err := w.whoami.Run(t, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "7002", "-j", "DROP"); err != nil {
		t.Fatalf("iptables: %v %s", err, out)
	}
	w.whoami.WaitPort(t, 7000, 60*time.Second) // a bound, not a measure: a loaded machine is slow to start it
	w.startAgent(t)
	w.agentAddr = w.target.Forward(t, agentPort)
	return w
}

func (w *world) startAgent(t *testing.T) {
	t.Helper()
	var extra []string
	if w.agentDebug != "" {
		extra = append(extra, "--debug-listen", w.agentDebug)
	}
	w.agent = w.target.Start(t, w.agentArgs(fmt.Sprintf("0.0.0.0:%d", agentPort), extra...))
	w.target.WaitPort(t, agentPort, 5*time.Second)
}

// agentArgs is the command line of the world's agent on listen: its
// token, its TLS key, then extra.
func (w *world) agentArgs(listen string, extra ...string) []string {
	return append([]string{w.tp, "agent", "--listen", listen, "--token-file", w.tokenFile, "--tls-key", w.keyFile}, extra...)
}

// sidecarOn starts a sidecar on the target pod's 127.0.0.1:port.
func (w *world) sidecarOn(t *testing.T, port int) {
	t.Helper()
	w.target.Start(t, []string{w.probe, "serve-whoami", fmt.Sprintf("127.0.0.1:%d", port), "sidecar"})
	w.target.WaitPort(t, port, 5*time.Second)
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs `trafficpolice sandbox run` with the agent and args, then argv.
func (w *world) run(t *testing.T, args []string, argv ...string) result {
	t.Helper()
	full := append([]string{"sandbox", "run", "--agent-address", w.agentAddr, "--agent-token-file", w.tokenFile}, args...)
	full = append(append(full, "--"), argv...)
	cmd := w.command(w.tp, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "GOTRACEBACK=all")
	if err := cmd.Start(); err != nil {
		t.Fatalf("run: %v", err)
	}
	// A run that outlives its app is a bug worth its goroutines: SIGQUIT
	// makes Go print them to stderr, which the log below shows.
	hung := time.AfterFunc(runDeadline, func() { cmd.Process.Signal(syscall.SIGQUIT) })
	err := cmd.Wait()
	stuck := !hung.Stop()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	} else {
		t.Fatalf("run: %v", err)
	}
	t.Logf("sandbox run %v -- %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, argv, r.code, r.stdout, r.stderr)
	if stuck {
		t.Fatalf("sandbox run %v -- %v was still running after %v; sent SIGQUIT (its goroutines are in the stderr above)", args, argv, runDeadline)
	}
	return r
}

func (w *world) sh(t *testing.T, args []string, script string) result {
	t.Helper()
	return w.run(t, args, "sh", "-c", script)
}

func contains(t *testing.T, s, want string) {
	t.Helper()
	if !strings.Contains(s, want) {
		t.Errorf("output does not contain %q:\n%s", want, s)
	}
}

func notContains(t *testing.T, s, unwanted string) {
	t.Helper()
	if strings.Contains(s, unwanted) {
		t.Errorf("output contains %q:\n%s", unwanted, s)
	}
}

// hostLoopback listens on the host's 127.0.0.1 and answers like a
// whoami server tagged "host".
func hostLoopback(t *testing.T) int { return hostWhoami(t, "tcp", "127.0.0.1:0", "host") }

// hostWhoami listens on the host at address and answers each connection
// with "TAG peer=ADDR:PORT"; it returns the port.
func hostWhoami(t *testing.T, network, address, tag string) int {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s peer=%s\n", tag, c.RemoteAddr())
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
