// Command demo tells the story of "The Traffic Police" (the blog post about
// mirrord's outgoing filter that started this project) with real programs:
// a namespace "cluster" on this machine runs uwu-service, the target pod
// uwu-app and the cluster's messages-db; the developer's own uwu-app runs
// under `trafficpolice sandbox run`, steals the pod's traffic, talks to the
// cluster's uwu-service, and writes to the local messages-db only.
//
// Run it as root with `make demo`. Everything it creates is removed at the
// end, on failure and on Ctrl-C, and at the end the demo checks that it is:
// it exits 1 if a namespace, a mount or a run record is left. It also makes
// a namespace the way other tools do (vishvananda/netns' NewNamed, as
// containerd's CRI does) before anything else, and deletes it their way at
// the very end: trafficpolice must never get in the way of that.
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/sandbox"
	"github.com/trafficpolice/trafficpolice/test/cluster"
)

// The seed's sentence and its config, as the blog post has them (with
// straight quotes: the post's own sample has typographic ones).
const (
	sentence = "Hey, are you enjoying mirrord? Why not star us on github? It would be very cool of you."
	seedConf = `{
  "target": "pod/uwu-app",
  "feature": {
    "network": {
      "incoming": "steal",
      "outgoing": { "filter": { "local": [":8888"] } }
    }
  }
}
`
)

func main() {
	verbose := flag.Bool("v", false, "show the harness's own log lines")
	flag.Parse()
	d := newDirector(*verbose)
	code := d.run(func(t *director) { story(t) })
	os.Exit(code)
}

func story(t *director) {
	if os.Geteuid() != 0 {
		t.Fatalf("the demo builds network namespaces: run it as root (sudo make demo)")
	}
	t.say("\n🚨 trafficpolice demo — the uwu story of \"The Traffic Police\", on a namespace \"cluster\"\n")
	makeForeignNamespace(t)
	t.step("building trafficpolice and the sample apps")
	tp := cluster.BuildApp(t, "./cmd/trafficpolice")
	uwuApp := cluster.BuildApp(t, "./test/apps/uwu-app")
	uwuService := cluster.BuildApp(t, "./test/apps/uwu-service")
	messagesDB := cluster.BuildApp(t, "./test/apps/messages-db")
	t.done()

	t.step("bringing up the cluster: network namespaces, a bridge and a DNS server (dnsmasq)")
	c := cluster.New(t)
	t.mustBeGone(c.Prefix())
	svc := c.AddPod(t, "uwu-service")
	db := c.AddPod(t, "messages-db")
	target := c.AddPod(t, "uwu-app")
	client := c.AddPod(t, "client")
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	clusterData := filepath.Join(dir, "cluster-messages.jsonl")
	localData := filepath.Join(dir, "local-messages.jsonl")
	svc.Start(t, []string{uwuService, "--listen", ":8080"})
	clusterDB := db.Start(t, []string{messagesDB, "--listen", ":8888", "--data", clusterData})
	target.Start(t, []string{uwuApp, "--listen", ":9999"}, "MESSAGES_DB=messages-db:8888", "UWU_SERVICE=uwu-service:8080")
	// The agent's key pins it: its fingerprint goes on the token file's
	// second line.
	keyFile, tokenFile := filepath.Join(dir, "agent.key"), filepath.Join(dir, "agent-token")
	fp, err := exec.Command(tp, "agent", "fingerprint", "--tls-key", keyFile).Output()
	if err != nil {
		t.Fatalf("agent fingerprint: %v", err)
	}
	os.WriteFile(tokenFile, []byte(fmt.Sprintf("demo-%d\n%s", time.Now().UnixNano(), fp)), 0o600)
	target.Start(t, []string{tp, "agent", "--listen", "0.0.0.0:7777", "--token-file", tokenFile, "--tls-key", keyFile})
	for _, p := range []struct {
		pod  *cluster.Pod
		port int
	}{{svc, 8080}, {db, 8888}, {target, 9999}, {target, 7777}} {
		p.pod.WaitPort(t, p.port, 10*time.Second)
	}
	agentAddr := target.Forward(t, 7777)
	t.done()

	t.say("")
	t.say("  in the cluster (namespaces on this machine, no route from the host into them):")
	t.say("    🥺 uwu-service   %-12s turns text into its uwu'd form", svc.IP())
	t.say("    😏 uwu-app       %-12s the target pod; stores into the cluster's messages-db", target.IP())
	t.say("    😀 messages-db   %-12s the cluster's database (the old schema)", db.IP())
	t.say("    🤖 agent         in uwu-app's network namespace, reached through a port-forward at %s", agentAddr)
	t.say("  on this host:")
	t.say("    😺 messages-db   127.0.0.1:8888 your local database (the new schema)")
	t.say("    😼 uwu-app       your local build, about to run under trafficpolice")

	hostDB := startHostProcess(t, "local messages-db", messagesDB, []string{"--listen", "127.0.0.1:8888", "--data", localData})
	waitTCP(t, "127.0.0.1:8888")

	conf := filepath.Join(dir, "config.json")
	os.WriteFile(conf, []byte(seedConf), 0o644)
	flows := filepath.Join(dir, "flows.jsonl")
	t.say("\n  config.json — the seed's own:\n%s", indent(seedConf, "    "))
	t.say("  $ MESSAGES_DB=127.0.0.1:8888 trafficpolice sandbox run -f config.json -- ./uwu-app")
	sandbox := startHostProcess(t, "sandbox", tp, []string{"sandbox", "run", "-f", conf, "--agent-address", agentAddr,
		"--agent-token-file", tokenFile, "--flow-log", flows, "--", uwuApp, "--listen", ":9999"},
		"MESSAGES_DB=127.0.0.1:8888", "UWU_SERVICE=uwu-service:8080")
	sandbox.echo = true
	sandbox.waitFor(t, "stealing", 30*time.Second)
	t.mustBeGone(runNamespace(t, sandbox.cmd.Process.Pid)...)
	time.Sleep(300 * time.Millisecond)

	t.say("\n  a client in the cluster sends the seed's message to the uwu-app pod:")
	t.say("  $ curl -d %q -X POST http://uwu-app:9999/uwu", sentence)
	out, err := client.Run(t, "curl", "-sS", "--max-time", "10", "-d", sentence, "-X", "POST", "http://uwu-app:9999/uwu")
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	t.say("%s", indent(strings.TrimSpace(out), "    "))
	sandbox.echo = false
	sandbox.stop(t)

	t.say("\n  where each hop went:")
	t.say("    incoming: client %s → pod uwu-app:9999, stolen by the agent → the local uwu-app's :9999", client.IP())
	for _, line := range flowLines(flows) {
		t.say("    %s", line)
	}
	t.say("\n  the local messages-db's log:")
	t.say("%s", indent(strings.TrimSpace(hostDB.output()), "    "))
	t.say("\n  the cluster's messages-db's log:")
	if logs := storeLines(clusterDB.Output()); logs == "" {
		t.say("    (nothing: it never heard of it — the logs there are so clean you could see your own reflection)")
	} else {
		t.say("%s", indent(logs, "    "))
		t.Errorf("the cluster's messages-db received a store")
	}
	hostDB.stop(t)

	t.say("\n  You can have youw cake and eat it t-too!! Against a real cluster it is the same command without")
	t.say("  --agent-address: trafficpolice finds pod/uwu-app with your kubeconfig, starts the agent in its")
	t.say("  network namespace and tunnels through the API server. `make demo KUBECONFIG=~/.kube/config` runs")
	t.say("  this story there (see the README's \"Kubernetes\").\n")
}

// makeForeignNamespace makes a namespace as another tool would, before the
// demo's own, and registers its deletion, the other tool's way, to run
// after every other cleanup: on a machine where /run/netns was not a mount
// point, that delete used to fail with "device or resource busy".
func makeForeignNamespace(t *director) {
	id, err := randomHex()
	if err != nil {
		t.Fatalf("%v", err)
	}
	name := "tpf-" + id
	if err := netnstest.NewForeign(name); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := netnstest.DeleteForeign(name); err != nil {
			t.Errorf("another tool's namespace is no longer deletable: %v", err)
		}
	})
	t.mustBeGone(name)
}

func randomHex() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random name: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// runNamespace finds, in the run records, the namespace and record folder
// of the sandbox run whose process is pid.
func runNamespace(t *director, pid int) []string {
	dirs, _ := filepath.Glob(filepath.Join(sandbox.StateDir, "*", "state.json"))
	for _, f := range dirs {
		var r struct {
			Namespace string `json:"namespace"`
			PID       int    `json:"pid"`
		}
		b, err := os.ReadFile(f)
		if err == nil && json.Unmarshal(b, &r) == nil && r.PID == pid && r.Namespace != "" {
			t.recordDirs = append(t.recordDirs, filepath.Dir(f))
			return []string{r.Namespace}
		}
	}
	t.Fatalf("no run record of the sandbox (pid %d) in %s", pid, sandbox.StateDir)
	return nil
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

func storeLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "store") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}

// flowLines renders the flow log as one line per hop.
func flowLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{"(no flow log: " + err.Error() + ")"}
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r struct {
			Proto, Dst, Host, Route, Rule, Error string
			BytesOut                             int64 `json:"bytes_out"`
			BytesIn                              int64 `json:"bytes_in"`
		}
		if json.Unmarshal([]byte(line), &r) != nil {
			continue
		}
		dst := r.Dst
		if r.Host != "" {
			dst = r.Host + " (" + r.Dst + ")"
		}
		s := fmt.Sprintf("%s %-52s → %-6s by %q, %d bytes out, %d in", r.Proto, dst, r.Route, r.Rule, r.BytesOut, r.BytesIn)
		if r.Error != "" {
			s += ", error: " + r.Error
		}
		out = append(out, s)
	}
	return out
}

func waitTCP(t *director, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

// hostProcess is a program the demo runs on the host, its output kept.
type hostProcess struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	echo bool
	seen chan string
	done chan struct{}
}

func startHostProcess(t *director, name, bin string, args []string, env ...string) *hostProcess {
	p := &hostProcess{name: name, cmd: exec.Command(bin, args...), seen: make(chan string, 256), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			echo := p.echo
			p.mu.Unlock()
			if echo {
				fmt.Printf("    %s\n", line)
			}
			select {
			case p.seen <- line:
			default:
			}
		}
	}()
	go func() {
		p.cmd.Wait()
		w.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *hostProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *hostProcess) waitFor(t *director, substr string, timeout time.Duration) {
	deadline := time.After(timeout)
	for {
		select {
		case line := <-p.seen:
			if strings.Contains(line, substr) {
				return
			}
		case <-p.done:
			t.Fatalf("%s exited before saying %q:\n%s", p.name, substr, p.output())
		case <-deadline:
			t.Fatalf("%s did not say %q within %s:\n%s", p.name, substr, timeout, p.output())
		}
	}
}

// stop ends the process with SIGINT, as Ctrl-C would, then waits.
func (p *hostProcess) stop(t *director) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// director drives the cluster harness outside `go test`: it implements
// cluster.TB, runs cleanups in reverse order at the end, on failure and on
// Ctrl-C, and prints the story's step lines.
type director struct {
	verbose    bool
	mu         sync.Mutex
	cleanups   []func()
	failed     bool
	stepMsg    string
	once       sync.Once
	gone       []string // namespace names (or name prefixes) that must be gone at the end
	recordDirs []string // run records that must be gone at the end
}

type fatal struct{}

func newDirector(verbose bool) *director { return &director{verbose: verbose} }

func (d *director) run(fn func(*director)) (code int) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Println("\n  interrupted: cleaning up")
		d.cleanup()
		os.Exit(130)
	}()
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fatal); !ok {
				d.cleanup()
				panic(r)
			}
			code = 1
		}
		d.cleanup()
		if left := d.leftovers(); len(left) > 0 {
			d.Errorf("left behind: %s", strings.Join(left, "; "))
		} else if !d.failed {
			fmt.Println("  ✓ everything the demo created is gone")
		}
		if d.failed && code == 0 {
			code = 1
		}
	}()
	fn(d)
	return 0
}

func (d *director) cleanup() {
	d.once.Do(func() {
		d.mu.Lock()
		cs := d.cleanups
		d.cleanups = nil
		d.mu.Unlock()
		for i := len(cs) - 1; i >= 0; i-- {
			cs[i]()
		}
	})
}

// mustBeGone has the end check look for namespaces starting with prefix.
func (d *director) mustBeGone(prefixes ...string) {
	d.mu.Lock()
	d.gone = append(d.gone, prefixes...)
	d.mu.Unlock()
}

// leftovers lists what the demo created and is still there after every
// cleanup: namespaces (under any name or mount) and run records.
func (d *director) leftovers() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var left []string
	for _, p := range d.gone {
		names, err := netns.List(p)
		if err != nil {
			left = append(left, err.Error())
		}
		for _, n := range names {
			left = append(left, "namespace "+n)
		}
		mounts, err := netnstest.NsfsMounts("/" + p)
		if err != nil {
			left = append(left, err.Error())
		}
		for _, m := range mounts {
			left = append(left, "mount "+m)
		}
	}
	for _, dir := range d.recordDirs {
		if _, err := os.Stat(dir); err == nil {
			left = append(left, "run record "+dir)
		}
	}
	return left
}

func (d *director) say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func (d *director) step(msg string) {
	d.stepMsg = msg
	fmt.Printf("  … %s\n", msg)
}

func (d *director) done() { fmt.Printf("  ✓ %s\n", d.stepMsg) }

func (d *director) Helper() {}
func (d *director) Logf(format string, args ...any) {
	if d.verbose {
		fmt.Printf("      | "+format+"\n", args...)
	}
}
func (d *director) Errorf(format string, args ...any) {
	d.failed = true
	fmt.Printf("  ✗ "+format+"\n", args...)
}
func (d *director) Fatalf(format string, args ...any) {
	d.Errorf(format, args...)
	panic(fatal{})
}
func (d *director) Skipf(format string, args ...any) { d.Fatalf(format, args...) }
func (d *director) Cleanup(fn func()) {
	d.mu.Lock()
	d.cleanups = append(d.cleanups, fn)
	d.mu.Unlock()
}
func (d *director) TempDir() string {
	dir, err := os.MkdirTemp("", "tp-demo-")
	if err != nil {
		d.Fatalf("temp dir: %v", err)
	}
	d.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

var _ cluster.TB = (*director)(nil)
