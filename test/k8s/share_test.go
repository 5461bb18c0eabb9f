package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trafficpolice/trafficpolice/agent/kube"
)

// TestRunsOnOnePodShareOneAgent: two developers start runs on the same
// target at the same moment, each stealing the pod's port for requests
// with their own header. They end up with one agent (one Secret, one Job
// or ephemeral container), each gets their requests, a third header goes
// to the pod's own app, and when alice leaves the agent stays for bob
// (his requests still reach him, hers go back to the pod); once bob
// leaves too, nothing of the agent is left.
func TestRunsOnOnePodShareOneAgent(t *testing.T) {
	c := need(t)
	testapp, err := c.BuildBinary("./test/k8s/testapp")
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name      string
		ephemeral bool
	}{{"job", false}, {"ephemeral", true}} {
		t.Run(mode.name, func(t *testing.T) {
			ctx := context.Background()
			ns := uwuNamespace(t, c, "tp-share-"+mode.name)
			pod := targetPod(t, c, ns, "uwu-app")
			people := []string{"alice", "bob"}
			runs := map[string]*stealingRun{}
			for _, who := range people {
				cfg := map[string]any{
					"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns},
					"agent": map[string]any{"ephemeral": mode.ephemeral, "image": c.AgentImage,
						"communication_timeout": 2, "startup_timeout": 60, "ttl": 0},
					"feature": map[string]any{"network": map[string]any{"incoming": map[string]any{
						"mode": "steal", "http_filter": map[string]any{"header_filter": "^x-user: " + who + "$"}}}},
				}
				// Both start before either has looked for an agent.
				runs[who] = startBackgroundRun(t, c, cfg, testapp, "serve", "--listen", fmt.Sprintf(":%d", UwuAppPort), "--name", who)
			}
			for _, who := range people {
				runs[who].waitStderr(t, fmt.Sprintf("stealing pod port %d", UwuAppPort), 90*time.Second)
			}
			joined := 0
			for _, who := range people {
				if strings.Contains(runs[who].stderr.String(), "joined the agent another run started") {
					joined++
				}
			}
			if joined != 1 {
				t.Errorf("%d of the two runs say they joined the other's agent, want 1", joined)
			}
			secrets, err := c.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
			if err != nil {
				t.Fatal(err)
			}
			if len(secrets.Items) != 1 {
				t.Errorf("%d agent Secrets in %s, want 1 (one shared agent)", len(secrets.Items), ns)
			}
			if mode.ephemeral {
				p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if n := len(p.Spec.EphemeralContainers); n != 1 {
					t.Errorf("pod %s has %d ephemeral containers, want 1 (one shared agent)", pod.Name, n)
				}
			} else {
				jobs, err := c.Client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
				if err != nil {
					t.Fatal(err)
				}
				if len(jobs.Items) != 1 {
					t.Errorf("%d agent Jobs in %s, want 1 (one shared agent)", len(jobs.Items), ns)
				}
			}

			answers := func(want map[string]string) {
				t.Helper()
				for who, name := range want {
					if got := answerFor(t, pod.Status.PodIP, who); got != name {
						t.Errorf("a request with x-user: %s was answered by %q, want %q", who, got, name)
					}
				}
			}
			answers(map[string]string{"alice": "alice", "bob": "bob", "carol": "uwu-app"})

			runs["alice"].stop(t)
			answers(map[string]string{"alice": "uwu-app", "bob": "bob", "carol": "uwu-app"})

			runs["bob"].stop(t)
			assertNoAgentLeft(t, c, ns, pod, mode.ephemeral)
			answers(map[string]string{"bob": "uwu-app"})
		})
	}
}

// answerFor sends a request with the header x-user: who to the target
// pod's app port from the node, as another pod would, and returns the
// name of the app that answered.
func answerFor(t *testing.T, podIP, who string) string {
	t.Helper()
	req, err := http.NewRequest("GET", fmt.Sprintf("http://%s:%d/", podIP, UwuAppPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-User", who)
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("request as %s: %v", who, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("request as %s: %s %v: %s", who, res.Status, err, body)
	}
	var a struct{ Name string }
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("request as %s: answer %q: %v", who, body, err)
	}
	return a.Name
}

// TestAKilledRunsSharedAgentServesTheNext: a run killed with SIGKILL leaves
// its agent (and, through the port-forward, maybe a tunnel the agent still
// counts). The next run on the pod joins that agent if it still runs, or
// replaces it if it left, steals its requests either way, and when it
// leaves, nothing of either is left: the killed run's silent tunnel does
// not keep the agent alive, and gc does not take an agent a run uses.
func TestAKilledRunsSharedAgentServesTheNext(t *testing.T) {
	c := need(t)
	testapp, err := c.BuildBinary("./test/k8s/testapp")
	if err != nil {
		t.Fatal(err)
	}
	ns := uwuNamespace(t, c, "tp-share-killed")
	pod := targetPod(t, c, ns, "uwu-app")
	cfgFor := func(who string) map[string]any {
		return map[string]any{
			"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns},
			"agent":  map[string]any{"image": c.AgentImage, "communication_timeout": 2, "startup_timeout": 60, "ttl": 0},
			"feature": map[string]any{"network": map[string]any{"incoming": map[string]any{
				"mode": "steal", "http_filter": map[string]any{"header_filter": "^x-user: " + who + "$"}}}},
		}
	}
	stealing := fmt.Sprintf("stealing pod port %d", UwuAppPort)
	alice := startBackgroundRun(t, c, cfgFor("alice"), testapp, "serve", "--listen", fmt.Sprintf(":%d", UwuAppPort), "--name", "alice")
	alice.waitStderr(t, stealing, 90*time.Second)
	if got := answerFor(t, pod.Status.PodIP, "alice"); got != "alice" {
		t.Fatalf("alice's request answered by %q", got)
	}
	_ = alice.cmd.Process.Kill()
	<-alice.done

	bob := startBackgroundRun(t, c, cfgFor("bob"), testapp, "serve", "--listen", fmt.Sprintf(":%d", UwuAppPort), "--name", "bob")
	bob.waitStderr(t, stealing, 90*time.Second)
	if got := answerFor(t, pod.Status.PodIP, "bob"); got != "bob" {
		t.Errorf("bob's request answered by %q, want bob's app", got)
	}
	joined := strings.Contains(bob.stderr.String(), "joined the agent another run started")
	t.Logf("bob joined the killed run's agent: %v", joined)
	bob.stop(t)
	if strings.Contains(bob.stderr.String(), "the agent stays") {
		t.Errorf("the killed run's tunnel kept the agent for nobody:\n%s", bob.stderr.String())
	}
	assertNoAgentLeft(t, c, ns, pod, false)
}
