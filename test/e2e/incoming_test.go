package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/test/cluster"
)

// The pod's app listens on these ports in the target pod; the sandboxed
// apps on the same or mapped ones.
const (
	stolenPort = 9999
	otherPort  = 9998
)

// incomingWorld is the remote world plus the pod's own app (tagserver
// "pod" on 9999, "pod2" on 9998) and a client pod that calls it.
type incomingWorld struct {
	*world
	client *cluster.Pod
	tags   string // the tagserver binary
	podURL string // http://<target ip>:9999
}

func newIncomingWorld(t *testing.T) *incomingWorld {
	t.Helper()
	w := &incomingWorld{world: newWorld(t)}
	w.tags = cluster.BuildApp(t, "./test/e2e/testdata/tagserver")
	w.client = w.c.AddPod(t, "client")
	w.target.Start(t, []string{w.tags, fmt.Sprintf(":%d", stolenPort), "pod"})
	w.target.Start(t, []string{w.tags, fmt.Sprintf(":%d", otherPort), "pod2"})
	w.target.WaitPort(t, stolenPort, 5*time.Second)
	w.target.WaitPort(t, otherPort, 5*time.Second)
	w.podURL = fmt.Sprintf("%s:%d", w.target.IP(), stolenPort)
	return w
}

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

// bgRun is a `sandbox run` in the background.
type bgRun struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	once           sync.Once
}

// start runs `trafficpolice sandbox run` with the agent, args, then argv,
// in the background; env adds to the environment. It is stopped in t's
// Cleanup if the test did not stop it.
func (w *incomingWorld) start(t *testing.T, name string, env []string, args []string, argv ...string) *bgRun {
	t.Helper()
	full := append([]string{"sandbox", "run", "--agent-address", w.agentAddr, "--agent-token-file", w.tokenFile}, args...)
	full = append(append(full, "--"), argv...)
	r := &bgRun{name: name, cmd: w.command(w.tp, full...), done: make(chan struct{})}
	if r.cmd.Env == nil {
		r.cmd.Env = os.Environ()
	}
	r.cmd.Env = append(r.cmd.Env, env...)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start sandbox run %s: %v", name, err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// waitStderr waits until the run printed substr on stderr.
func (r *bgRun) waitStderr(t *testing.T, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(r.stderr.String(), substr) {
		select {
		case <-r.done:
			if strings.Contains(r.stderr.String(), substr) {
				return
			}
			t.Fatalf("sandbox run %s exited without printing %q:\nstdout:\n%s\nstderr:\n%s", r.name, substr, r.stdout.String(), r.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox run %s did not print %q within %s:\nstderr:\n%s", r.name, substr, timeout, r.stderr.String())
		}
	}
}

// stop ends the run as Ctrl-C would and waits for it.
func (r *bgRun) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-r.done:
			case <-time.After(20 * time.Second):
				_ = r.cmd.Process.Kill()
				<-r.done
				t.Errorf("sandbox run %s did not stop within 20s of SIGINT", r.name)
			}
		}
		t.Logf("sandbox run %s ended (%v)\nstdout:\n%s\nstderr:\n%s", r.name, r.cmd.ProcessState, r.stdout.String(), r.stderr.String())
	})
}

// get sends one request from the client pod on a new connection and
// returns the answer's body (or the error's text).
func (w *incomingWorld) get(t *testing.T, method, addr, path string, header ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := w.client.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "error: " + err.Error()
	}
	defer conn.Close()
	return exchange(t, conn, bufio.NewReader(conn), method, path, header...)
}

// exchange sends one request on conn and reads its answer.
func exchange(t *testing.T, conn net.Conn, br *bufio.Reader, method, path string, header ...string) string {
	t.Helper()
	req, err := http.NewRequest(method, "http://pod"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(conn); err != nil {
		return "error: " + err.Error()
	}
	res, err := http.ReadResponse(br, req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}

func wantAnswer(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("answer %q, want %q", got, want)
	}
}

// natRules is the target pod's nat table as iptables-save prints it.
func (w *incomingWorld) natRules(t *testing.T) string {
	t.Helper()
	out, err := w.target.Run(t, "iptables-save", "-t", "nat")
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	out6, err := w.target.Run(t, "ip6tables-save", "-t", "nat")
	if err != nil {
		t.Fatalf("ip6tables-save: %v", err)
	}
	return out + out6
}

func (w *incomingWorld) wantNoRules(t *testing.T) {
	t.Helper()
	if rules := w.natRules(t); strings.Contains(rules, "TP-IN-") || strings.Contains(rules, "REDIRECT") {
		t.Errorf("the pod's nat table still holds rules of the agent:\n%s", rules)
	}
}

func TestIncomingTraffic(t *testing.T) {
	w := newIncomingWorld(t)
	tagApp := func(addr, tag string) []string { return []string{w.tags, addr, tag} }
	steal := func(t *testing.T, incoming string) []string {
		return []string{"-f", writeConfig(t, `{"feature":{"network":{"incoming":`+incoming+`}}}`)}
	}
	stealing := fmt.Sprintf("stealing pod port %d → app :%d", stolenPort, stolenPort)

	t.Run("steal: the sandboxed app answers, on 127.0.0.1 only; open connections stay with the pod; the pod gets its port back", func(t *testing.T) {
		// A keep-alive connection opened before the steal.
		before, err := w.client.DialContext(context.Background(), "tcp", w.podURL)
		if err != nil {
			t.Fatal(err)
		}
		defer before.Close()
		beforeR := bufio.NewReader(before)
		wantAnswer(t, exchange(t, before, beforeR, "GET", "/before"), "pod GET /before")

		r := w.start(t, "steal", nil, steal(t, `"steal"`), tagApp(fmt.Sprintf("127.0.0.1:%d", stolenPort), "local")...)
		r.waitStderr(t, "✓ "+stealing, 20*time.Second)
		if rules := w.natRules(t); !strings.Contains(rules, "TP-IN-") || !strings.Contains(rules, fmt.Sprintf("--dport %d", stolenPort)) {
			t.Errorf("no redirect of port %d in the pod's nat table:\n%s", stolenPort, rules)
		}
		wantAnswer(t, w.get(t, "GET", w.podURL, "/from-client"), "local GET /from-client")
		wantAnswer(t, w.get(t, "POST", w.podURL, "/again"), "local POST /again")
		// From the pod itself, over its loopback (nat OUTPUT).
		conn, err := w.target.DialContext(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", stolenPort))
		if err != nil {
			t.Fatal(err)
		}
		wantAnswer(t, exchange(t, conn, bufio.NewReader(conn), "GET", "/from-pod"), "local GET /from-pod")
		conn.Close()
		// The connection from before the steal still reaches the pod's app.
		wantAnswer(t, exchange(t, before, beforeR, "GET", "/still"), "pod GET /still")
		// The other port is not the app's: untouched.
		wantAnswer(t, w.get(t, "GET", fmt.Sprintf("%s:%d", w.target.IP(), otherPort), "/x"), "pod2 GET /x")

		r.stop(t)
		contains(t, r.stdout.String(), "local got GET /from-client")
		contains(t, r.stdout.String(), "local got GET /from-pod")
		wantAnswer(t, w.get(t, "GET", w.podURL, "/after"), "pod GET /after")
		w.wantNoRules(t)
	})

	t.Run("header filter: per request on one keep-alive connection; raw TCP passes through", func(t *testing.T) {
		r := w.start(t, "header", nil, steal(t, `{"mode":"steal","http_filter":{"header_filter":"^x-user: alice$"}}`),
			tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
		r.waitStderr(t, "✓ "+stealing, 20*time.Second)
		conn, err := w.client.DialContext(context.Background(), "tcp", w.podURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		wantAnswer(t, exchange(t, conn, br, "GET", "/1", "X-User", "alice"), "local GET /1")
		wantAnswer(t, exchange(t, conn, br, "GET", "/2"), "pod GET /2")
		wantAnswer(t, exchange(t, conn, br, "POST", "/3", "x-user", "ALICE"), "local POST /3")
		wantAnswer(t, exchange(t, conn, br, "GET", "/4", "X-User", "bob"), "pod GET /4")
		wantAnswer(t, exchange(t, conn, br, "GET", "/5", "X-User", "alice"), "local GET /5")

		raw, err := w.client.DialContext(context.Background(), "tcp", w.podURL)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(raw, "hello raw\nsecond line\n")
		rr := bufio.NewReader(raw)
		for _, want := range []string{"pod raw: hello raw", "pod raw: second line"} {
			line, err := rr.ReadString('\n')
			if err != nil {
				t.Fatalf("raw TCP through a filtered port: %v", err)
			}
			wantAnswer(t, strings.TrimSpace(line), want)
		}
		r.stop(t)
		if n := strings.Count(r.stdout.String(), "local got"); n != 3 {
			t.Errorf("the local app got %d requests, want 3", n)
		}
	})

	filters := []struct {
		name, filter string
		local, pod   [][]string // method, path, header name, header value
	}{
		{"path", `{"path_filter":"^/api/"}`,
			[][]string{{"GET", "/api/a"}, {"DELETE", "/api/b"}},
			[][]string{{"GET", "/apix"}, {"GET", "/other/api/"}}},
		{"method", `{"method_filter":"delete"}`,
			[][]string{{"DELETE", "/a"}},
			[][]string{{"GET", "/a"}, {"POST", "/a"}}},
		{"all_of", `{"all_of":[{"path":"^/api"},{"header":"^x-user: alice$"}]}`,
			[][]string{{"GET", "/api/a", "X-User", "alice"}},
			[][]string{{"GET", "/api/a"}, {"GET", "/b", "X-User", "alice"}}},
		{"any_of", `{"any_of":[{"method":"PUT"},{"header":"^x-user: bob$"}]}`,
			[][]string{{"PUT", "/a"}, {"GET", "/b", "X-User", "bob"}},
			[][]string{{"GET", "/c"}, {"POST", "/d", "X-User", "alice"}}},
	}
	for _, f := range filters {
		t.Run(f.name+" filter", func(t *testing.T) {
			r := w.start(t, f.name, nil, steal(t, `{"mode":"steal","http_filter":`+f.filter+`}`), tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
			r.waitStderr(t, "✓ "+stealing, 20*time.Second)
			conn, err := w.client.DialContext(context.Background(), "tcp", w.podURL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			for i := range max(len(f.local), len(f.pod)) {
				if i < len(f.local) {
					q := f.local[i]
					wantAnswer(t, exchange(t, conn, br, q[0], q[1], q[2:]...), "local "+q[0]+" "+q[1])
				}
				if i < len(f.pod) {
					q := f.pod[i]
					wantAnswer(t, exchange(t, conn, br, q[0], q[1], q[2:]...), "pod "+q[0]+" "+q[1])
				}
			}
		})
	}

	t.Run("mirror: the pod answers every request and the local app gets each one", func(t *testing.T) {
		r := w.start(t, "mirror", nil, steal(t, `"mirror"`), tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
		r.waitStderr(t, fmt.Sprintf("✓ mirroring pod port %d → app :%d", stolenPort, stolenPort), 20*time.Second)
		for i := range 5 {
			path := fmt.Sprintf("/m/%d", i)
			wantAnswer(t, w.get(t, "GET", w.podURL, path), "pod GET "+path)
		}
		conn, err := w.client.DialContext(context.Background(), "tcp", w.podURL)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		for i := range 3 {
			path := fmt.Sprintf("/k/%d", i)
			wantAnswer(t, exchange(t, conn, br, "POST", path), "pod POST "+path)
		}
		conn.Close()
		waitFor(t, func() bool { return strings.Count(r.stdout.String(), "local got") == 8 }, 10*time.Second,
			func() string { return "the local app's copies:\n" + r.stdout.String() })
		for i := range 5 {
			contains(t, r.stdout.String(), fmt.Sprintf("local got GET /m/%d", i))
		}
		contains(t, r.stdout.String(), "local got POST /k/2")
	})

	t.Run("mirror with a header filter copies only matching requests", func(t *testing.T) {
		r := w.start(t, "mirror-filter", nil, steal(t, `{"mode":"mirror","http_filter":{"header_filter":"^x-user: alice$"}}`),
			tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
		r.waitStderr(t, fmt.Sprintf("✓ mirroring pod port %d → app :%d", stolenPort, stolenPort), 20*time.Second)
		conn, err := w.client.DialContext(context.Background(), "tcp", w.podURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		wantAnswer(t, exchange(t, conn, br, "GET", "/a", "X-User", "alice"), "pod GET /a")
		wantAnswer(t, exchange(t, conn, br, "GET", "/b"), "pod GET /b")
		wantAnswer(t, exchange(t, conn, br, "GET", "/c", "X-User", "alice"), "pod GET /c")
		waitFor(t, func() bool { return strings.Count(r.stdout.String(), "local got") == 2 }, 10*time.Second,
			func() string { return "the local app's copies:\n" + r.stdout.String() })
		notContains(t, r.stdout.String(), "local got GET /b")
	})

	t.Run("port_mapping and ignore_ports", func(t *testing.T) {
		cfg := fmt.Sprintf(`{"mode":"steal","port_mapping":[[9333,%d]],"ignore_ports":[%d]}`, stolenPort, otherPort)
		r := w.start(t, "mapping", nil, steal(t, cfg), "sh", "-c",
			fmt.Sprintf("%[1]s :9333 local & %[1]s :%[2]d ignored & wait", w.tags, otherPort))
		r.waitStderr(t, fmt.Sprintf("✓ stealing pod port %d → app :9333", stolenPort), 20*time.Second)
		wantAnswer(t, w.get(t, "GET", w.podURL, "/mapped"), "local GET /mapped")
		wantAnswer(t, w.get(t, "GET", fmt.Sprintf("%s:%d", w.target.IP(), otherPort), "/ignored"), "pod2 GET /ignored")
		notContains(t, r.stderr.String(), fmt.Sprintf("pod port %d", otherPort))
	})

	t.Run("two clients with different header filters; a whole steal is refused naming the holder", func(t *testing.T) {
		alice := w.start(t, "alice", []string{"SUDO_USER=alice"}, steal(t, `{"mode":"steal","http_filter":{"header_filter":"^x-user: alice$"}}`),
			tagApp(fmt.Sprintf(":%d", stolenPort), "alice")...)
		bob := w.start(t, "bob", []string{"SUDO_USER=bob"}, steal(t, `{"mode":"steal","http_filter":{"header_filter":"^x-user: bob$"}}`),
			tagApp(fmt.Sprintf(":%d", stolenPort), "bob")...)
		alice.waitStderr(t, "✓ "+stealing, 20*time.Second)
		bob.waitStderr(t, "✓ "+stealing, 20*time.Second)
		// Both hold the port, in whichever order they came.
		conn, err := w.client.DialContext(context.Background(), "tcp", w.podURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		wantAnswer(t, exchange(t, conn, br, "GET", "/1", "X-User", "alice"), "alice GET /1")
		wantAnswer(t, exchange(t, conn, br, "GET", "/2", "X-User", "bob"), "bob GET /2")
		wantAnswer(t, exchange(t, conn, br, "GET", "/3"), "pod GET /3")
		wantAnswer(t, exchange(t, conn, br, "GET", "/4", "X-User", "bob"), "bob GET /4")

		carol := w.start(t, "carol", []string{"SUDO_USER=carol"}, steal(t, `"steal"`), tagApp(fmt.Sprintf(":%d", stolenPort), "carol")...)
		carol.waitStderr(t, "✗ "+stealing, 20*time.Second)
		contains(t, carol.stderr.String(), "already stolen by ")
		contains(t, carol.stderr.String(), `alice@`)
		contains(t, carol.stderr.String(), `bob@`)
		wantAnswer(t, w.get(t, "GET", w.podURL, "/5", "X-User", "alice"), "alice GET /5")
		carol.stop(t)

		alice.stop(t)
		wantAnswer(t, w.get(t, "GET", w.podURL, "/6", "X-User", "alice"), "pod GET /6")
		wantAnswer(t, w.get(t, "GET", w.podURL, "/7", "X-User", "bob"), "bob GET /7")
		bob.stop(t)
		w.wantNoRules(t)
	})

	t.Run("kill -9 of the client: the pod's app answers at once, no rule after communication_timeout", func(t *testing.T) {
		cfg := writeConfig(t, `{"agent":{"communication_timeout":2},"feature":{"network":{"incoming":"steal"}}}`)
		r := w.start(t, "killed", nil, []string{"-f", cfg}, tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
		r.waitStderr(t, "✓ "+stealing, 20*time.Second)
		wantAnswer(t, w.get(t, "GET", w.podURL, "/before-kill"), "local GET /before-kill")
		t.Cleanup(func() {
			// The killed run's namespace and app; the next run would do it too.
			out, err := exec.Command(w.tp, "sandbox", "gc").CombinedOutput()
			t.Logf("sandbox gc: %v\n%s", err, out)
		})
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.done
		killed := time.Now()
		wantAnswer(t, w.get(t, "GET", w.podURL, "/after-kill"), "pod GET /after-kill")
		waitFor(t, func() bool { return !strings.Contains(w.natRules(t), "TP-IN-") }, 15*time.Second,
			func() string { return "the pod's nat table:\n" + w.natRules(t) })
		t.Logf("the rules were gone %s after the kill (communication_timeout 2s)", time.Since(killed).Round(10*time.Millisecond))
	})

	t.Run("a new agent removes a dead agent's chains and keeps a live one's", func(t *testing.T) {
		live := w.start(t, "live", nil, steal(t, `"steal"`), tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
		live.waitStderr(t, "✓ "+stealing, 20*time.Second)
		liveChains := chainsIn(w.natRules(t))
		if len(liveChains) != 1 {
			t.Fatalf("want the live agent's one chain, have %v", liveChains)
		}
		// A second agent in the pod steals the other port, then dies hard.
		const port2 = agentPort + 1
		second := w.target.Start(t, w.agentArgs(fmt.Sprintf("0.0.0.0:%d", port2)))
		w.target.WaitPort(t, port2, 5*time.Second)
		addr2 := w.target.Forward(t, port2)
		doomed := w.start(t, "doomed", nil, append(steal(t, `"steal"`), "--agent-address", addr2),
			tagApp(fmt.Sprintf(":%d", otherPort), "doomed")...)
		doomed.waitStderr(t, fmt.Sprintf("✓ stealing pod port %d", otherPort), 20*time.Second)
		var dead string
		for _, c := range chainsIn(w.natRules(t)) {
			if c != liveChains[0] {
				dead = c
			}
		}
		if dead == "" {
			t.Fatalf("no chain of the second agent:\n%s", w.natRules(t))
		}
		second.Signal(syscall.SIGKILL)
		<-second.Done()
		doomed.stop(t)
		if !strings.Contains(w.natRules(t), dead) {
			t.Fatalf("the killed agent's chain %s is gone already; the test proves nothing", dead)
		}
		third := w.target.Start(t, w.agentArgs(fmt.Sprintf("0.0.0.0:%d", port2)))
		third.WaitOutput(t, "incoming traffic ready", 10*time.Second)
		rules := w.natRules(t)
		if strings.Contains(rules, dead) {
			t.Errorf("the dead agent's chain %s is still there:\n%s", dead, rules)
		}
		if !strings.Contains(rules, liveChains[0]) {
			t.Errorf("the live agent's chain %s was removed:\n%s", liveChains[0], rules)
		}
		wantAnswer(t, w.get(t, "GET", w.podURL, "/live"), "local GET /live")
		third.Stop()
		live.stop(t)
		w.wantNoRules(t)
	})

	t.Run("the agent's SIGTERM removes its rules", func(t *testing.T) {
		r := w.start(t, "sigterm", nil, steal(t, `"steal"`), tagApp(fmt.Sprintf(":%d", stolenPort), "local")...)
		r.waitStderr(t, "✓ "+stealing, 20*time.Second)
		if !strings.Contains(w.natRules(t), "TP-IN-") {
			t.Fatal("no rule of the agent while stealing")
		}
		if err := w.agent.Stop(); err != nil {
			t.Fatal(err)
		}
		w.wantNoRules(t)
		wantAnswer(t, w.get(t, "GET", w.podURL, "/agent-gone"), "pod GET /agent-gone")
		r.stop(t)
		w.startAgent(t)
	})
}

// chainsIn lists the agent chains (TP-IN-*) declared in iptables-save output.
func chainsIn(rules string) []string {
	var out []string
	for _, l := range strings.Split(rules, "\n") {
		if name, ok := strings.CutPrefix(l, ":TP-IN-"); ok {
			name, _, _ = strings.Cut(name, " ")
			if c := "TP-IN-" + name; !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// waitFor polls cond until it holds or timeout passes; why describes the
// state for the failure message.
func waitFor(t *testing.T, cond func() bool, timeout time.Duration, why func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not so after %s: %s", timeout, why())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIncomingLoad measures requests per second and latency from a client
// pod to the pod's app, directly and through each incoming path, in one
// run with the same load loop, and logs them (numbers, no assertions:
// timed assertions do not belong in tests). Every request must succeed.
func TestIncomingLoad(t *testing.T) {
	w := newIncomingWorld(t)
	const port = 9997
	w.target.Start(t, []string{w.tags, fmt.Sprintf(":%d", port), "pod", "-q"})
	w.target.WaitPort(t, port, 5*time.Second)
	addr := fmt.Sprintf("%s:%d", w.target.IP(), port)
	app := []string{w.tags, fmt.Sprintf(":%d", port), "local", "-q"}
	const workers, duration = 8, 2 * time.Second

	type row struct {
		name string
		res  loadResult
	}
	var rows []row
	measure := func(name, incoming string, header ...string) {
		if incoming != "" {
			cfg := writeConfig(t, `{"feature":{"network":{"incoming":`+incoming+`}}}`)
			r := w.start(t, name, nil, []string{"-f", cfg}, app...)
			r.waitStderr(t, fmt.Sprintf(" pod port %d → app :%d", port, port), 20*time.Second)
			defer r.stop(t)
		}
		res := w.load(t, addr, workers, duration, header...)
		if res.errors > 0 {
			t.Errorf("%s: %d of %d requests failed; first: %s", name, res.errors, res.errors+len(res.latencies), res.firstErr)
		}
		rows = append(rows, row{name, res})
	}
	measure("direct to the pod's app", "")
	measure("steal", `"steal"`)
	measure("steal, header filter matching", `{"mode":"steal","http_filter":{"header_filter":"^x-user: alice$"}}`, "X-User", "alice")
	measure("header filter, passed to the pod", `{"mode":"steal","http_filter":{"header_filter":"^x-user: alice$"}}`)
	measure("mirror (the pod answers)", `"mirror"`)

	base := rows[0].res
	var b strings.Builder
	fmt.Fprintf(&b, "%d keep-alive connections from a client pod, %s per path:\n", workers, duration)
	fmt.Fprintf(&b, "%-36s %10s %8s %10s %10s %12s %12s\n", "path", "req/s", "ratio", "p50", "p99", "+p50", "+p99")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-36s %10.0f %8.2f %10s %10s %12s %12s\n", r.name, r.res.rate, r.res.rate/base.rate,
			r.res.p50, r.res.p99, r.res.p50-base.p50, r.res.p99-base.p99)
	}
	t.Log(b.String())
}

type loadResult struct {
	rate      float64
	p50, p99  time.Duration
	latencies []time.Duration
	errors    int
	firstErr  string
}

// load runs workers request loops, each on its own keep-alive connection
// from the client pod, for d, and summarises them.
func (w *incomingWorld) load(t *testing.T, addr string, workers int, d time.Duration, header ...string) loadResult {
	t.Helper()
	var mu sync.Mutex
	var res loadResult
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var errs int
			var first string
			conn, err := w.client.DialContext(context.Background(), "tcp", addr)
			if err != nil {
				mu.Lock()
				res.errors++
				res.firstErr = err.Error()
				mu.Unlock()
				return
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			for time.Since(start) < d {
				t0 := time.Now()
				got := exchange(t, conn, br, "GET", "/load", header...)
				if !strings.HasSuffix(got, "GET /load") {
					errs++
					if first == "" {
						first = got
					}
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			res.errors += errs
			if res.firstErr == "" {
				res.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(res.latencies, func(i, j int) bool { return res.latencies[i] < res.latencies[j] })
	if n := len(res.latencies); n > 0 {
		res.rate = float64(n) / elapsed.Seconds()
		res.p50 = res.latencies[n/2]
		res.p99 = res.latencies[n*99/100]
	}
	return res
}
