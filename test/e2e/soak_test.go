package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/sandbox"
)

// Faults and load (issue 13): `make test` runs these in a short form,
// `make soak` (TP_SOAK=full) at full size.

type soakScale struct{ flows, kills, sandboxes int }

func scale() soakScale {
	if os.Getenv("TP_SOAK") == "full" {
		return soakScale{flows: 10000, kills: 20, sandboxes: 20}
	}
	return soakScale{flows: 1500, kills: 6, sandboxes: 6}
}

// usage is what one side holds: goroutines, open descriptors, live heap.
type usage struct {
	goroutines, fds int
	heap            uint64
}

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %.1f MiB heap", u.goroutines, u.fds, float64(u.heap)/(1<<20))
}

// settled says whether u is back within 10% of base in goroutines and
// descriptors (and a small absolute slack, for counts in the tens).
func (u usage) settled(base usage) bool {
	ok := func(v, b, slack int) bool { return v <= b+max(b/10, slack) }
	return ok(u.goroutines, base.goroutines, 3) && ok(u.fds, base.fds, 3)
}

// highWater is what a burst may leave on the heap for good: Go never
// frees a goroutine's descriptor (runtime.malg, 480 bytes, kept for
// reuse) nor shrinks a map (gVisor's endpoint tables, yamux's streams)
// after a peak; the heap profile after 1 500 flows shows exactly these.
// A KiB per goroutine of the peak bounds both.
func highWater(base, peak usage) uint64 {
	return uint64(max(peak.goroutines-base.goroutines, 0))<<10 + 1<<20
}

// readUsage asks a debug server (through dial) for goroutines and the
// live heap after a GC, and counts pid's descriptors.
func readUsage(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), addr string, pid int) (usage, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 20 * time.Second}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/debug/vars?gc=1", nil)
	resp, err := c.Do(req)
	if err != nil {
		return usage{}, err
	}
	defer resp.Body.Close()
	var vars struct {
		Goroutines int `json:"goroutines"`
		Memstats   struct {
			HeapAlloc uint64 `json:"HeapAlloc"`
		} `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		return usage{}, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return usage{}, err
	}
	return usage{goroutines: vars.Goroutines, fds: len(fds), heap: vars.Memstats.HeapAlloc}, nil
}

// saveHeap writes a heap profile (after a GC) from a debug server to path.
func saveHeap(t *testing.T, dial func(context.Context, string, string) (net.Conn, error), addr, path string) {
	c := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 20 * time.Second}
	resp, err := c.Get("http://" + addr + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Logf("heap profile of %s: %v", addr, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	os.WriteFile(path, b, 0o644)
	t.Logf("heap profile of %s in %s", addr, path)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSoakFlowsReturnToIdle: many concurrent remote flows through one
// sandbox and one agent, then back to idle: goroutines, descriptors and
// the live heap return to within 10% of where they started, on both sides.
func TestSoakFlowsReturnToIdle(t *testing.T) {
	n := scale().flows
	w := newWorld(t)
	// The agent again, with its debug server on the pod's loopback.
	w.agent.Signal(syscall.SIGTERM)
	<-w.agent.Done()
	w.agentDebug = "127.0.0.1:7778"
	w.startAgent(t)

	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	start, release := filepath.Join(dir, "start"), filepath.Join(dir, "release") // suffixed by round
	debug := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// A first round of a few flows warms what is made once (pools, lazily
	// built tables): the idle figures are taken after it.
	warm := filepath.Join(dir, "warm")
	if err := os.WriteFile(warm, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`%[2]s hold whoami:7001 50 %[5]s >/dev/null && echo ready
		for r in 1 2; do
			while [ ! -e %[1]s$r ]; do sleep 0.05; done
			%[2]s hold whoami:7001 %[3]d %[4]s$r || exit 1
			echo "round $r"
		done
		while :; do sleep 1; done`,
		start, w.probe, n, release, warm)
	cmd := exec.Command(w.tp, "sandbox", "run", "-q", "--debug-listen", debug, "--agent-address", w.agentAddr,
		"--agent-token-file", w.tokenFile, "--", "sh", "-c", script)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(want string, timeout time.Duration) {
		t.Helper()
		deadline := time.After(timeout)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the app ended before %q; stderr:\n%s", want, stderr.String())
				}
				if strings.HasPrefix(l, "error") {
					t.Fatalf("the app: %s", l)
				}
				if strings.HasPrefix(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q within %s; stderr:\n%s", want, timeout, stderr.String())
			}
		}
	}
	ctx := context.Background()
	var d net.Dialer
	both := func() (router, agent usage) {
		t.Helper()
		var err error
		if router, err = readUsage(ctx, d.DialContext, debug, cmd.Process.Pid); err != nil {
			t.Fatalf("the sandbox's usage: %v", err)
		}
		if agent, err = readUsage(ctx, w.target.DialContext, w.agentDebug, w.agent.Pid()); err != nil {
			t.Fatalf("the agent's usage: %v", err)
		}
		return
	}
	waitLine("ready", 60*time.Second)
	baseR, baseA := both()
	if dir := os.Getenv("TP_SOAK_PROFILES"); dir != "" {
		saveHeap(t, d.DialContext, debug, filepath.Join(dir, "sandbox-heap-idle.pb.gz"))
		saveHeap(t, w.target.DialContext, w.agentDebug, filepath.Join(dir, "agent-heap-idle.pb.gz"))
	}
	// Two bursts of the same size: after each, goroutines and descriptors
	// are back where they were; the heap keeps no more than the peak's
	// high-water structures after the first, and the second adds nothing.
	var after [2][2]usage // [round][sandbox, agent]
	for r := range 2 {
		if err := os.WriteFile(fmt.Sprintf("%s%d", start, r+1), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		waitLine("held", 5*time.Minute)
		peakR, peakA := both()
		t.Logf("round %d, %d flows held: sandbox %s (idle: %s); agent %s (idle: %s)", r+1, n, peakR, baseR, peakA, baseA)
		if peakA.fds < baseA.fds+n/2 {
			t.Fatalf("the flows do not show on the agent: %d fds at the peak, %d idle", peakA.fds, baseA.fds)
		}
		if err := os.WriteFile(fmt.Sprintf("%s%d", release, r+1), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		waitLine(fmt.Sprintf("round %d", r+1), 2*time.Minute)
		hwR, hwA := highWater(baseR, peakR), highWater(baseA, peakA)
		var nowR, nowA usage
		deadline := time.Now().Add(60 * time.Second)
		for {
			nowR, nowA = both()
			if nowR.settled(baseR) && nowA.settled(baseA) && nowR.heap <= baseR.heap+hwR && nowA.heap <= baseA.heap+hwA {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("60 s after round %d's %d flows closed: sandbox %s (idle before: %s, heap allowed %.1f MiB more), agent %s (idle before: %s, heap allowed %.1f MiB more)",
					r+1, n, nowR, baseR, float64(hwR)/(1<<20), nowA, baseA, float64(hwA)/(1<<20))
			}
			time.Sleep(500 * time.Millisecond)
		}
		after[r] = [2]usage{nowR, nowA}
		t.Logf("round %d back to idle: sandbox %s, agent %s", r+1, nowR, nowA)
	}
	if dir := os.Getenv("TP_SOAK_PROFILES"); dir != "" {
		saveHeap(t, d.DialContext, debug, filepath.Join(dir, "sandbox-heap.pb.gz"))
		saveHeap(t, w.target.DialContext, w.agentDebug, filepath.Join(dir, "agent-heap.pb.gz"))
	}
	for side := range 2 {
		first, second := after[0][side].heap, after[1][side].heap
		if second > first+max(first/10, 1<<20) {
			t.Errorf("%s: the second burst left %.1f MiB more heap than the first (%.1f → %.1f MiB): something grows per flow",
				[]string{"sandbox", "agent"}[side], float64(second-first)/(1<<20), float64(first)/(1<<20), float64(second)/(1<<20))
		}
	}
}

// TestSoakParallelSandboxes: sandboxes started at once on one host, each
// with its own traffic: all succeed, none sees another's.
func TestSoakParallelSandboxes(t *testing.T) {
	n := scale().sandboxes
	w := newWorld(t)
	var wg sync.WaitGroup
	results := make([]result, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each run echoes a message of its own, 20 connections at once.
			results[i] = w.sh(t, nil, fmt.Sprintf("%s echo whoami:7001 20 && echo run-%d", w.probe, i))
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 || !strings.Contains(r.stdout, "20 echoed") || !strings.Contains(r.stdout, fmt.Sprintf("run-%d\n", i)) {
			t.Errorf("run %d: exit %d, stdout %q", i, r.code, r.stdout)
		}
		for j := range n {
			if j != i && strings.Contains(r.stdout, fmt.Sprintf("run-%d\n", j)) {
				t.Errorf("run %d saw run %d's output", i, j)
			}
		}
	}
}

// TestSoakKilledAtAnyMoment: `sandbox run` killed with SIGKILL at moments
// spread over its start-up and its run, then `sandbox gc`: nothing of it
// is left on the host, and the agent's pod is as before.
func TestSoakKilledAtAnyMoment(t *testing.T) {
	k := scale().kills
	w := newIncomingWorld(t)
	steal := writeConfig(t, `{"feature":{"network":{"incoming":"steal"}}}`)
	killed := map[int]bool{}
	for i := range k {
		// From 0 to ~1.5 s: before the namespace, during the router's
		// start, the steal's set-up, and the app's run.
		delay := time.Duration(i) * 1500 * time.Millisecond / time.Duration(max(k-1, 1))
		cmd := exec.Command(w.tp, "sandbox", "run", "-q", "-f", steal, "--agent-address", w.agentAddr,
			"--agent-token-file", w.tokenFile, "--", w.tags, fmt.Sprintf(":%d", stolenPort), "killed")
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Kill()
		cmd.Wait()
		killed[cmd.Process.Pid] = true
	}
	// What the killed runs left, by their records (other tests' runs may
	// be alive on this host meanwhile: they are not ours to judge).
	left := runsOf(t, killed)
	t.Logf("%d runs killed; %d left a record", k, len(left))
	gc := exec.Command(w.tp, "sandbox", "gc")
	if out, err := gc.CombinedOutput(); err != nil {
		t.Fatalf("sandbox gc: %v\n%s", err, out)
	}
	if again := runsOf(t, killed); len(again) > 0 {
		t.Errorf("records left after gc: %v", again)
	}
	names, _ := netns.List(sandbox.NamespacePrefix)
	for _, r := range left {
		if slices.Contains(names, r.Namespace) {
			t.Errorf("namespace %s of a killed run left after gc", r.Namespace)
		}
	}
	// The agent gives the pod its port back once a client's tunnel has
	// been gone for its linger time (connections meanwhile reach the
	// pod's app through the agent): then no rule of it is left.
	deadline := time.Now().Add(120 * time.Second)
	for {
		rules := w.natRules(t)
		if !strings.Contains(rules, "TP-IN-") && !strings.Contains(rules, "REDIRECT") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pod's nat table still holds the agent's rules 120 s after the killed runs:\n%s", rules)
		}
		time.Sleep(time.Second)
	}
	wantAnswer(t, w.get(t, "GET", w.podURL, "/after-kills"), "pod GET /after-kills")
}

type runRecord struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	PID       int    `json:"pid"`
}

// runsOf reads the run records of the given trafficpolice processes.
func runsOf(t *testing.T, pids map[int]bool) []runRecord {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(sandbox.StateDir, "*", "state.json"))
	var out []runRecord
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var r runRecord
		if json.Unmarshal(b, &r) == nil && pids[r.PID] {
			out = append(out, r)
		}
	}
	return out
}
