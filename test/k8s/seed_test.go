package k8s

import (
	"bufio"
	"context"
	"encoding/json"
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

	"github.com/trafficpolice/trafficpolice/test/apps/uwu"
)

// The seed's sentence, from "The Traffic Police".
const seedSentence = "Hey, are you enjoying mirrord? Why not star us on github? It would be very cool of you."

// localDBAddr is where the developer's messages-db listens on the host.
// Port 8888 as in the seed; 127.0.0.2, not .1, so that it never meets the
// namespace cluster's seed tests (test/e2e), which take 127.0.0.1:8888
// and may run at the same time under `go test ./...`.
const localDBAddr = "127.0.0.2:8888"

// seedNamespace deploys the seed story (DeploySeed) in a namespace of its
// own, removed when the test ends.
func seedNamespace(t *testing.T, c *Cluster, prefix string) string {
	t.Helper()
	ctx := context.Background()
	ns, err := c.NewNamespace(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DeleteNamespace(context.Background(), ns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := c.DeploySeed(ctx, ns); err != nil {
		t.Fatalf("deploy the seed story: %v\nkubelet: %s", err, c.Logs("kubelet", 20))
	}
	return ns
}

// localMessagesDB runs the developer's messages-db on localDBAddr until the
// test ends and returns its data file.
func localMessagesDB(t *testing.T, c *Cluster) string {
	t.Helper()
	bin, err := c.BuildBinary("./test/apps/messages-db")
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "local-messages.jsonl")
	cmd := exec.Command(bin, "--listen", localDBAddr, "--data", data)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Logf("local messages-db:\n%s", out.String())
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", localDBAddr, time.Second)
		if err == nil {
			conn.Close()
			return data
		}
		if time.Now().After(deadline) {
			t.Fatalf("the local messages-db does not listen on %s: %v\n%s", localDBAddr, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a strings.Builder safe for a writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// storedMessages reads a messages-db data file (one JSON object a line).
func storedMessages(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		var m struct{ Text string }
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %q: %v", path, sc.Text(), err)
		}
		texts = append(texts, m.Text)
	}
	return texts
}

// stealingRun is `sandbox run` of the developer's uwu-app in the
// background, until stop.
type stealingRun struct {
	cmd    *exec.Cmd
	stderr syncBuffer
	stdout syncBuffer
	done   chan struct{}
	once   sync.Once
}

func startStealingRun(t *testing.T, c *Cluster, cfg map[string]any) *stealingRun {
	t.Helper()
	app, err := c.BuildBinary("./test/apps/uwu-app")
	if err != nil {
		t.Fatal(err)
	}
	// The developer points their app at the local database, as in the seed.
	return startBackgroundRun(t, c, cfg, app, "--listen", fmt.Sprintf(":%d", SeedAppPort), "--messages-db", localDBAddr,
		"--uwu-service", fmt.Sprintf("uwu-service:%d", ServicePort))
}

// startBackgroundRun starts `sandbox run -f CONFIG -- ARGV...`, stopped
// (as Ctrl-C would) at the latest when the test ends.
func startBackgroundRun(t *testing.T, c *Cluster, cfg map[string]any, argv ...string) *stealingRun {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r := &stealingRun{done: make(chan struct{})}
	r.cmd = exec.Command(binary(t, c), append([]string{"sandbox", "run", "-f", cfgPath, "--"}, argv...)...)
	r.cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// waitStderr waits until the run printed substr.
func (r *stealingRun) waitStderr(t *testing.T, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(r.stderr.String(), substr) {
		select {
		case <-r.done:
			t.Fatalf("sandbox run exited without printing %q:\nstderr:\n%s", substr, r.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox run did not print %q within %s:\nstderr:\n%s", substr, timeout, r.stderr.String())
		}
	}
}

// stop ends the run as Ctrl-C would and waits for it.
func (r *stealingRun) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-r.done:
			case <-time.After(30 * time.Second):
				_ = r.cmd.Process.Kill()
				<-r.done
				t.Errorf("sandbox run did not stop within 30s of SIGINT")
			}
		}
		t.Logf("sandbox run ended (%v)\nstdout:\n%s\nstderr:\n%s", r.cmd.ProcessState, r.stdout.String(), r.stderr.String())
	})
}

// TestSeedStoryThroughKubernetes is the seed's scenario on the real
// cluster, for both ways of starting the agent: with "target":
// "deployment/uwu-app", incoming "steal" and outgoing filter.local
// [":8888"], a client pod's POST to the uwu-app service is answered by the
// sandboxed uwu-app, which reaches uwu-service by its short name (through
// the agent, from the pod's address) and stores into the developer's
// messages-db on the host; the cluster's messages-db receives nothing.
// The agent image has no iptables binary: the agent writes its redirect
// with nftables. Afterwards the pod's app answers again, and no agent pod,
// Job, process or nat rule of ours is left.
func TestSeedStoryThroughKubernetes(t *testing.T) {
	c := need(t)
	for _, mode := range []struct {
		name      string
		ephemeral bool
	}{{"job", false}, {"ephemeral", true}} {
		t.Run(mode.name, func(t *testing.T) {
			ctx := context.Background()
			ns := seedNamespace(t, c, "tp-seed-"+mode.name)
			pod := targetPod(t, c, ns, "uwu-app")
			localDB := localMessagesDB(t, c)
			cfg := map[string]any{
				"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns},
				"agent": map[string]any{"ephemeral": mode.ephemeral, "image": c.AgentImage,
					"communication_timeout": 2, "startup_timeout": 60, "ttl": 0},
				"feature": map[string]any{"network": map[string]any{
					"incoming": "steal",
					"outgoing": map[string]any{"filter": map[string]any{"local": []string{":8888"}}},
				}},
			}
			start := time.Now()
			run := startStealingRun(t, c, cfg)
			run.waitStderr(t, fmt.Sprintf("✓ stealing pod port %d → app :%d", SeedAppPort, SeedAppPort), 90*time.Second)
			t.Logf("stealing %s after the start of sandbox run", time.Since(start).Round(time.Millisecond))

			// The redirect is an nftables table of the agent's own.
			pid := appPID(t, c, ns)
			tables := strings.Join(podNFTables(t, pid), "\n")
			if !strings.Contains(tables, fmt.Sprintf("tcp dport %d syn fib daddr type local redirect to :", SeedAppPort)) {
				t.Errorf("no nftables redirect of port %d in the pod:\n%s", SeedAppPort, tables)
			}

			answer, err := c.RunPod(ctx, ns, "client", []string{"post", "--url", fmt.Sprintf("http://uwu-app:%d/uwu", SeedAppPort), "--data", seedSentence})
			t.Logf("the client pod's answer: %q", answer)
			if err != nil {
				t.Fatalf("client pod: %v\n%s", err, answer)
			}
			want := uwu.Transform(seedSentence)
			if !strings.Contains(answer, "Added new message") || !strings.Contains(answer, want) {
				t.Fatalf("answer %q does not carry the uwu'd text %q", answer, want)
			}
			if local := storedMessages(t, localDB); len(local) != 1 || local[0] != want {
				t.Errorf("the local messages-db holds %q, want the uwu'd message", local)
			}
			if !strings.Contains(answer, "with id 0") {
				t.Errorf("the answer does not come from the app that stored into the (empty) local database: %q", answer)
			}
			svcPod := targetPod(t, c, ns, "uwu-service")
			svcLog, err := c.PodLogs(ctx, ns, svcPod.Name, "uwu-service")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(svcLog, pod.Status.PodIP+":") {
				t.Errorf("uwu-service was not called from the target pod's address %s:\n%s", pod.Status.PodIP, svcLog)
			}
			dbPod := targetPod(t, c, ns, "messages-db")
			dbLog, err := c.PodLogs(ctx, ns, dbPod.Name, "messages-db")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(dbLog, "store;") || strings.Contains(dbLog, "POST") {
				t.Errorf("the cluster's messages-db received a message:\n%s", dbLog)
			}

			run.stop(t)
			assertNoAgentLeft(t, c, ns, pod, mode.ephemeral)

			// The pod has its port back: its own uwu-app answers and
			// stores into the cluster's messages-db.
			again, err := c.RunPod(ctx, ns, "client-after", []string{"post", "--url", fmt.Sprintf("http://uwu-app:%d/uwu", SeedAppPort), "--data", "back to the pod"})
			if err != nil || !strings.Contains(again, "Added new message") {
				t.Fatalf("after the run, the pod's app should answer: %v\n%s", err, again)
			}
			if local := storedMessages(t, localDB); len(local) != 1 {
				t.Errorf("after the run, the local messages-db got more: %q", local)
			}
			dbLog, _ = c.PodLogs(ctx, ns, dbPod.Name, "messages-db")
			if !strings.Contains(dbLog, "store;") {
				t.Errorf("after the run, the cluster's messages-db should have the pod's message:\n%s", dbLog)
			}
		})
	}
}
