package k8s

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/trafficpolice/trafficpolice/agent/kube"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// otherKindsScript resolves and calls uwu-service through the sandbox, then
// prints what tells whose network and environment the app got: POD_NAME
// (imported from the target), the app's user and the sandbox's hosts file
// (the agent's pod hostname and addresses).
var otherKindsScript = fmt.Sprintf(`getent hosts uwu-service | sed 's/^/DNS /' && curl -sS --max-time 20 http://uwu-service:%d/ &&
	echo "POD_NAME=${POD_NAME:-unset}" && echo "UID=$(id -u)" && sed 's/^/HOSTS /' /etc/hosts`, ServicePort)

// otherKindsResult is what otherKindsScript printed.
type otherKindsResult struct {
	dnsAddr string // uwu-service's address as the sandbox resolved it
	svc     answer // uwu-service's answer
	env     string // POD_NAME=...
	uid     string
	hosts   map[string]string // hostname → address, from the sandbox's /etc/hosts
}

func parseOtherKinds(t *testing.T, out string) otherKindsResult {
	t.Helper()
	r := otherKindsResult{hosts: map[string]string{}}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		switch {
		case strings.HasPrefix(line, "DNS "):
			r.dnsAddr = strings.Fields(line)[1]
		case strings.HasPrefix(line, "{"):
			if err := json.Unmarshal([]byte(line), &r.svc); err != nil {
				t.Fatalf("uwu-service's answer %q: %v", line, err)
			}
		case strings.HasPrefix(line, "POD_NAME="):
			r.env = line
		case strings.HasPrefix(line, "UID="):
			r.uid = strings.TrimPrefix(line, "UID=")
		case strings.HasPrefix(line, "HOSTS "):
			if f := strings.Fields(line); len(f) >= 3 && !strings.HasPrefix(f[1], "#") {
				r.hosts[f[2]] = f[1]
			}
		}
	}
	if r.dnsAddr == "" || r.svc.Name == "" || r.env == "" || r.uid == "" {
		t.Fatalf("the script's output is missing lines:\n%s", out)
	}
	return r
}

// TestOtherTargetKinds runs, against one namespace with the uwu story, a
// statefulset and a job: a run whose target is the statefulset, one whose
// target is the job, a targetless one, and one as root under sudo with
// the kubeconfig in the invoking user's home only. In each the sandboxed
// app resolves uwu-service by its short name to the Service's cluster IP
// (the cluster's DNS, through the agent) and reaches it from the agent's
// pod: the target's address, or the agent's own pod's when targetless.
func TestOtherTargetKinds(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	ns, err := c.NewNamespace(ctx, "tp-kinds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DeleteNamespace(context.Background(), ns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	// Started before the uwu story so that their pods start while it does.
	if err := c.DeployOtherKinds(ctx, ns, "tp"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeployUwu(ctx, ns); err != nil {
		t.Fatalf("deploy the uwu story: %v\nkubelet: %s", err, c.Logs("kubelet", 20))
	}
	stsPod, jobPod, err := c.WaitOtherKinds(ctx, ns, "tp")
	if err != nil {
		t.Fatalf("%v\nkubelet: %s", err, c.Logs("kubelet", 20))
	}
	svc, err := c.Client.CoreV1().Services(ns).Get(ctx, "uwu-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agentCfg := map[string]any{"image": c.AgentImage, "communication_timeout": 2, "startup_timeout": 60, "ttl": 0}
	cfgFor := func(target string) map[string]any {
		return map[string]any{"target": map[string]any{"path": target, "namespace": ns}, "agent": agentCfg}
	}
	// common checks what every run must show: DNS and the connection went
	// through the cluster, from peerIP.
	common := func(t *testing.T, r otherKindsResult, peerIP string) {
		t.Helper()
		if r.dnsAddr != svc.Spec.ClusterIP {
			t.Errorf("uwu-service resolved to %s, want the Service's cluster IP %s", r.dnsAddr, svc.Spec.ClusterIP)
		}
		if r.svc.Name != "uwu-service" {
			t.Errorf("uwu-service:%d answered as %q", ServicePort, r.svc.Name)
		}
		if host, _, _ := net.SplitHostPort(r.svc.Peer); host != peerIP {
			t.Errorf("uwu-service saw the peer %s, want %s", r.svc.Peer, peerIP)
		}
	}

	for _, tc := range []struct{ name, target, podName, podIP string }{
		{"statefulset", "statefulset/tp-sts", stsPod.Name, stsPod.Status.PodIP},
		{"job", "job/tp-job", jobPod.Name, jobPod.Status.PodIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := timedRun(t, c, cfgFor(tc.target))
			if err != nil {
				t.Fatalf("sandbox run: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
			}
			r := parseOtherKinds(t, out)
			common(t, r, tc.podIP)
			if r.env != "POD_NAME="+tc.podName {
				t.Errorf("environment: got %q, want POD_NAME=%s (the target pod's)", r.env, tc.podName)
			}
			// The agent's hostname and addresses are the target pod's (the
			// Job's agent enters the target's UTS namespace too).
			if r.hosts[tc.podName] != tc.podIP {
				t.Errorf("the sandbox's hosts file maps the target pod's name %s to %q, want its address %s: %v", tc.podName, r.hosts[tc.podName], tc.podIP, r.hosts)
			}
			if want := fmt.Sprintf("pod %s/%s, container app", ns, tc.podName); !strings.Contains(errOut, want) {
				t.Errorf("the progress does not name the target pod (%q):\n%s", want, errOut)
			}
			assertNoAgentJobLeft(t, c, ns)
		})
	}

	t.Run("targetless", func(t *testing.T) {
		out, errOut, err := timedRun(t, c, cfgFor("targetless"))
		if err != nil {
			t.Fatalf("sandbox run: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		}
		r := parseOtherKinds(t, out)
		// The agent's pod is its Job's: the progress names it, its hosts
		// entry gives its address, and uwu-service must see that address.
		m := regexp.MustCompile(`port-forward to pod ` + regexp.QuoteMeta(ns) + `/(trafficpolice-agent-[a-z0-9-]+)`).FindStringSubmatch(errOut)
		if m == nil {
			t.Fatalf("the progress names no agent pod of its own in %s:\n%s", ns, errOut)
		}
		agentIP := r.hosts[m[1]]
		if agentIP == "" {
			t.Fatalf("the sandbox's hosts file has no entry for the agent's pod %s: %v", m[1], r.hosts)
		}
		for _, p := range []string{stsPod.Status.PodIP, jobPod.Status.PodIP, targetPod(t, c, ns, "uwu-app").Status.PodIP} {
			if agentIP == p {
				t.Errorf("the targetless agent's address %s is a workload pod's", agentIP)
			}
		}
		common(t, r, agentIP)
		if r.env != "POD_NAME=unset" {
			t.Errorf("a targetless run imported an environment: %q", r.env)
		}
		// Nobody sends anything to the agent's own pod: no incoming
		// traffic is set up (mirroring is the default) nor warned about.
		if strings.Contains(errOut, "mirror") || strings.Contains(errOut, "incoming") {
			t.Errorf("a targetless run speaks of incoming traffic:\n%s", errOut)
		}
		assertNoAgentJobLeft(t, c, ns)
	})

	t.Run("sudo-user-kubeconfig", func(t *testing.T) {
		u := netnstest.NewUser(t)
		kubeContext := "tp-sudo-" + netnstest.Suffix(t)
		kubeconfig := homeKubeconfig(t, c, u, kubeContext)
		dir := t.TempDir()
		os.Chmod(dir, 0o755)
		os.Chmod(filepath.Dir(dir), 0o755)
		cfgPath := filepath.Join(dir, "config.json")
		b, _ := json.Marshal(cfgFor("statefulset/tp-sts"))
		if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 100*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, binary(t, c), "sandbox", "run", "-f", cfgPath, "--", "sh", "-c", otherKindsScript)
		// What sudo gives root: its own HOME (no kubeconfig there), no
		// KUBECONFIG, and who invoked it.
		for _, kv := range os.Environ() {
			switch k, _, _ := strings.Cut(kv, "="); k {
			case "HOME", "USER", "LOGNAME", "KUBECONFIG", "SUDO_USER", "SUDO_UID", "SUDO_GID":
			default:
				cmd.Env = append(cmd.Env, kv)
			}
		}
		home := t.TempDir() // root's home: empty
		cmd.Env = append(cmd.Env, "HOME="+home, "USER=root", "LOGNAME=root",
			"SUDO_USER="+u.Name, fmt.Sprintf("SUDO_UID=%d", u.UID), fmt.Sprintf("SUDO_GID=%d", u.GID))
		cmd.Dir = dir
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		t.Logf("sandbox run took %s; its progress:\n%s", time.Since(start).Round(time.Millisecond), stderr.String())
		if err != nil {
			t.Fatalf("sandbox run under sudo: %v\nstdout:\n%s", err, stdout.String())
		}
		first, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		for _, want := range []string{fmt.Sprintf("context %q", kubeContext), "namespace " + ns, "target statefulset/tp-sts", "kubeconfig " + kubeconfig} {
			if !strings.Contains(first, want) {
				t.Errorf("the first progress line %q does not say %q", first, want)
			}
		}
		r := parseOtherKinds(t, stdout.String())
		common(t, r, stsPod.Status.PodIP)
		if r.uid != fmt.Sprint(u.UID) {
			t.Errorf("under sudo the app ran as uid %s, want the invoking user's %d", r.uid, u.UID)
		}
		assertNoAgentJobLeft(t, c, ns)
	})
}

// timedRun is sandboxRun of otherKindsScript, its time and progress logged.
func timedRun(t *testing.T, c *Cluster, cfg map[string]any) (string, string, error) {
	t.Helper()
	start := time.Now()
	out, errOut, err := sandboxRun(t, c, cfg, otherKindsScript)
	t.Logf("sandbox run took %s; its progress:\n%s", time.Since(start).Round(time.Millisecond), errOut)
	return out, errOut, err
}

// homeKubeconfig writes the cluster's kubeconfig, credentials embedded and
// its one context renamed to context, as u's ~/.kube/config (owned by u,
// 0600 as kubectl writes it): a run that uses it says that context.
func homeKubeconfig(t *testing.T, c *Cluster, u netnstest.User, context string) string {
	t.Helper()
	cfg := flatKubeconfig(t, c)
	kc := cfg.Contexts[cfg.CurrentContext]
	if kc == nil {
		t.Fatalf("the cluster's kubeconfig has no current context %q", cfg.CurrentContext)
	}
	cfg.Contexts = map[string]*clientcmdapi.Context{context: kc}
	cfg.CurrentContext = context
	dir := filepath.Join(u.Home, ".kube")
	path := filepath.Join(dir, "config")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, path} {
		if err := os.Chown(p, int(u.UID), int(u.GID)); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// assertNoAgentJobLeft waits for the run's agent Job, pod and Secret in ns
// to be gone, and for no agent process to run on the node.
func assertNoAgentJobLeft(t *testing.T, c *Cluster, ns string) {
	t.Helper()
	ctx := context.Background()
	err := c.waitFor("the agent to be gone", 60*time.Second, func() error {
		sel := metav1.ListOptions{LabelSelector: kube.AgentLabel}
		jobs, err := c.Client.BatchV1().Jobs(ns).List(ctx, sel)
		if err != nil {
			return err
		}
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, sel)
		if err != nil {
			return err
		}
		secrets, err := c.Client.CoreV1().Secrets(ns).List(ctx, sel)
		if err != nil {
			return err
		}
		if n := len(jobs.Items) + len(pods.Items) + len(secrets.Items); n > 0 {
			return fmt.Errorf("%d jobs, %d pods, %d secrets of the agent left", len(jobs.Items), len(pods.Items), len(secrets.Items))
		}
		if pids := agentProcesses(); len(pids) > 0 {
			return fmt.Errorf("agent processes still run: %v", pids)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
