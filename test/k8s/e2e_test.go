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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/enter"
	"github.com/trafficpolice/trafficpolice/agent/kube"
	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

var trafficpolice struct {
	once sync.Once
	path string
	err  error
}

// binary builds cmd/trafficpolice once per test binary (the same build
// the agent image holds).
func binary(t *testing.T, c *Cluster) string {
	t.Helper()
	trafficpolice.once.Do(func() {
		// A developer may test another build of the CLI against this tree's agent.
		if p := os.Getenv("TRAFFICPOLICE_TEST_BINARY"); p != "" {
			trafficpolice.path = p
			return
		}
		trafficpolice.path, trafficpolice.err = c.BuildBinary("./cmd/trafficpolice")
	})
	if trafficpolice.err != nil {
		t.Fatal(trafficpolice.err)
	}
	return trafficpolice.path
}

// uwuNamespace deploys the seed story in a namespace of its own, removed
// when the test ends.
func uwuNamespace(t *testing.T, c *Cluster, prefix string) string {
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
	if err := c.DeployUwu(ctx, ns); err != nil {
		t.Fatalf("deploy the uwu story: %v\nkubelet: %s", err, c.Logs("kubelet", 20))
	}
	return ns
}

type answer struct{ Name, Peer, Hostname, Env string }

// sandboxRun runs `trafficpolice sandbox run -f CONFIG -- sh -c SCRIPT`
// and returns its stdout and stderr.
func sandboxRun(t *testing.T, c *Cluster, cfg map[string]any, script string, extra ...string) (string, string, error) {
	t.Helper()
	return sandboxRunAs(t, c, nil, cfg, script, extra...)
}

// sandboxRunAs is sandboxRun as the ordinary user u (rootless), with a
// copy of the cluster's kubeconfig of u's own; nil runs as root.
func sandboxRunAs(t *testing.T, c *Cluster, u *netnstest.User, cfg map[string]any, script string, extra ...string) (string, string, error) {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	cfgPath := filepath.Join(dir, "config.json")
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"sandbox", "run", "-f", cfgPath}, extra...)
	args = append(args, "--", "sh", "-c", script)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t, c), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	if u != nil {
		bin := filepath.Join(dir, "trafficpolice")
		copyFile(t, binary(t, c), bin, 0o755)
		kubeconfig := userKubeconfig(t, c, *u)
		cmd = u.CommandContext(ctx, bin, args...)
		cmd.Env = append(cmd.Env, "KUBECONFIG="+kubeconfig)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// flatKubeconfig is the cluster's kubeconfig with its certificates and
// key embedded, as a user's file holds them.
func flatKubeconfig(t *testing.T, c *Cluster) *clientcmdapi.Config {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// userKubeconfig writes the cluster's kubeconfig, its certificates and key
// embedded, into u's home: what a user's ~/.kube/config is.
func userKubeconfig(t *testing.T, c *Cluster, u netnstest.User) string {
	t.Helper()
	cfg := flatKubeconfig(t, c)
	path := filepath.Join(u.Home, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, int(u.UID), int(u.GID)); err != nil {
		t.Fatal(err)
	}
	return path
}

func targetPod(t *testing.T, c *Cluster, ns, app string) *corev1.Pod {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of %s: %v (%d)", app, err, len(pods.Items))
	}
	return &pods.Items[0]
}

// TestTargetDeploymentThroughKubernetes is issue 8's scenario, for both
// ways of starting the agent: the sandboxed app reaches uwu-service by
// its short name with the target pod's address as the peer, reaches the
// pod's sidecar on 127.0.0.1, gets the pod's environment (the image's
// variables too, read from the running process), and afterwards
// no agent process, Job, pod or iptables rule is left.
func TestTargetDeploymentThroughKubernetes(t *testing.T) {
	c := need(t)
	for _, mode := range []struct {
		name                string
		ephemeral, rootless bool
	}{{"job", false, false}, {"ephemeral", true, false}, {"job-rootless", false, true}} {
		t.Run(mode.name, func(t *testing.T) {
			var user *netnstest.User
			if mode.rootless {
				u := netnstest.NewUser(t)
				netnstest.TUNOpenToAll(t)
				user = &u
			}
			ns := uwuNamespace(t, c, "tp-e2e-"+mode.name)
			pod := targetPod(t, c, ns, "uwu-app")
			cfg := map[string]any{
				"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns},
				"agent": map[string]any{"ephemeral": mode.ephemeral, "image": c.AgentImage,
					"communication_timeout": 2, "startup_timeout": 60, "ttl": 0},
				"feature": map[string]any{"env": map[string]any{"exclude": "SECRET_*", "override": map[string]string{"LOG_LEVEL": "info"}}},
			}
			script := fmt.Sprintf(`curl -sS --max-time 20 http://uwu-service:%d/ && curl -sS --max-time 20 http://127.0.0.1:%d/ &&
				echo "GREETING=$GREETING" && echo "POD_NAME=$POD_NAME" && echo "POD_IP=$POD_IP" && echo "UWU_URL=$UWU_URL" &&
				echo "MESSAGES_DB=$MESSAGES_DB" && echo "LOG_LEVEL=$LOG_LEVEL" && echo "SECRET_TOKEN=${SECRET_TOKEN:-unset}" &&
				echo "IMAGE_GREETING=$IMAGE_GREETING"`, ServicePort, SidecarPort)
			start := time.Now()
			out, errOut, err := sandboxRunAs(t, c, user, cfg, script)
			t.Logf("sandbox run took %s; its progress:\n%s", time.Since(start).Round(time.Millisecond), errOut)
			if err != nil {
				t.Fatalf("sandbox run: %v\nstdout:\n%s\nkubelet:\n%s", err, out, c.Logs("kubelet", 15))
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) < 10 {
				t.Fatalf("want two answers and eight variables, got:\n%s", out)
			}
			var svc, side answer
			if err := json.Unmarshal([]byte(lines[0]), &svc); err != nil {
				t.Fatalf("uwu-service's answer %q: %v", lines[0], err)
			}
			if svc.Name != "uwu-service" {
				t.Errorf("uwu-service:%d answered as %q", ServicePort, svc.Name)
			}
			if host, _, _ := net.SplitHostPort(svc.Peer); host != pod.Status.PodIP {
				t.Errorf("uwu-service saw the peer %s, want the target pod's address %s", svc.Peer, pod.Status.PodIP)
			}
			if err := json.Unmarshal([]byte(lines[1]), &side); err != nil || side.Name != "sidecar" {
				t.Errorf("127.0.0.1:%d should be the pod's sidecar, got %q (%v)", SidecarPort, lines[1], err)
			}
			want := []string{
				"GREETING=hello from the pod", "POD_NAME=" + pod.Name, "POD_IP=" + pod.Status.PodIP,
				fmt.Sprintf("UWU_URL=http://uwu-service:%d/", ServicePort), "MESSAGES_DB=messages-db:8888",
				"LOG_LEVEL=info", "SECRET_TOKEN=unset",
				ImageEnv, // from the image's config, through the running process
			}
			for i, w := range want {
				if lines[2+i] != w {
					t.Errorf("environment: got %q, want %q", lines[2+i], w)
				}
			}
			assertNoAgentLeft(t, c, ns, pod, mode.ephemeral)
		})
	}
}

// assertNoAgentLeft waits for the agent to be gone: no Job or agent pod
// (Job mode), the ephemeral container terminated (ephemeral mode), no
// agent process on the node, and no trafficpolice rule (iptables chain or
// nftables table) in the pod's network namespace.
func assertNoAgentLeft(t *testing.T, c *Cluster, ns string, pod *corev1.Pod, ephemeral bool) {
	t.Helper()
	ctx := context.Background()
	err := c.waitFor("the agent to be gone", 60*time.Second, func() error {
		jobs, err := c.Client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
		if err != nil {
			return err
		}
		if len(jobs.Items) > 0 {
			return fmt.Errorf("job %s is still there", jobs.Items[0].Name)
		}
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("agent pod %s is still there", pods.Items[0].Name)
		}
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ephemeral && len(p.Status.EphemeralContainerStatuses) == 0 {
			return fmt.Errorf("pod %s has no ephemeral container status: was the agent ever there?", pod.Name)
		}
		for _, st := range p.Status.EphemeralContainerStatuses {
			if st.State.Terminated == nil {
				return fmt.Errorf("ephemeral container %s has not ended", st.Name)
			}
		}
		// An ephemeral container's spec stays with the pod: the token must
		// not be in it, only a reference to the run's Secret.
		for _, ec := range p.Spec.EphemeralContainers {
			for _, e := range ec.Env {
				if e.Name == proto.EnvToken && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
					return fmt.Errorf("ephemeral container %s carries the token in its spec (%+v)", ec.Name, e)
				}
			}
		}
		secrets, err := c.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
		if err != nil {
			return err
		}
		if len(secrets.Items) > 0 {
			return fmt.Errorf("the agent's Secret %s is still there", secrets.Items[0].Name)
		}
		if pids := agentProcesses(); len(pids) > 0 {
			return fmt.Errorf("agent processes still run: %v", pids)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The pod's own rules: the agent's chains or tables must be gone with it.
	pid := appPID(t, c, ns)
	out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "iptables-save").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save in the pod: %v %s", err, out)
	}
	if strings.Contains(strings.ToLower(string(out)), "trafficpolice") || strings.Contains(string(out), "TP-") {
		t.Errorf("the pod's network namespace still has trafficpolice rules:\n%s", out)
	}
	if tables := podNFTables(t, pid); len(tables) > 0 {
		t.Errorf("the pod's network namespace still has the agent's nftables:\n%s", strings.Join(tables, "\n"))
	}
}

// appPID is the PID, on this node, of the uwu-app pod's container "app".
func appPID(t *testing.T, c *Cluster, ns string) int {
	t.Helper()
	cid := ""
	for _, st := range targetPod(t, c, ns, "uwu-app").Status.ContainerStatuses {
		if st.Name == "app" {
			cid = st.ContainerID
		}
	}
	socket, id, err := enter.SplitID(cid)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := enter.PID(context.Background(), socket, id)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// podNFTables lists the agent tables (nat.ListNFTables) in the network
// namespace of process pid.
func podNFTables(t *testing.T, pid int) []string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatalf("the pod's network namespace: %v", err)
	}
	defer f.Close()
	tables, err := nat.ListNFTables(int(f.Fd()))
	if err != nil {
		t.Fatalf("list the pod's nftables: %v", err)
	}
	return tables
}

// agentProcesses lists the PIDs of `trafficpolice agent` processes on
// this node (the agents of the cluster's pods run here).
func agentProcesses() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == "trafficpolice" && args[1] == "agent" && strings.Contains(string(b), "--idle-exit") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestListAndCompleteTargets: `trafficpolice ls` lists a namespace's
// targets with their containers, and shell completion offers them (and
// namespaces and contexts) as kubectl's does, through the built command.
func TestListAndCompleteTargets(t *testing.T) {
	c := need(t)
	ns := uwuNamespace(t, c, "tp-ls")
	tp := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary(t, c), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("trafficpolice %v: %v", args, err)
		}
		return string(out)
	}
	var listed struct {
		Namespace string            `json:"namespace"`
		Targets   []kube.TargetInfo `json:"targets"`
	}
	if err := json.Unmarshal([]byte(tp("ls", "-n", ns, "-o", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	byPath := map[string]kube.TargetInfo{}
	for _, ti := range listed.Targets {
		byPath[ti.Path] = ti
	}
	app, ok := byPath["deployment/uwu-app"]
	// Its sidecar is a native one (an init container that keeps running):
	// not a container a run may target.
	if !ok || !slices.Equal(app.Containers, []string{"app"}) || app.Status != "1/1 ready" {
		t.Errorf("deployment/uwu-app listed as %+v; want its container app, 1/1 ready (all: %+v)", app, listed.Targets)
	}
	if _, ok := byPath["service/uwu-service"]; !ok {
		t.Errorf("service/uwu-service not listed: %+v", listed.Targets)
	}
	pod := targetPod(t, c, ns, "uwu-app")
	if p := byPath["pod/"+pod.Name]; p.Status != "running" {
		t.Errorf("pod/%s listed as %+v, want running", pod.Name, p)
	}
	for path := range byPath {
		if strings.HasPrefix(path, "replicaset/") {
			t.Errorf("%s listed: a deployment's replica sets are not targets of their own", path)
		}
	}
	text := tp("ls", "-n", ns)
	if !strings.Contains(text, "TARGET") || !strings.Contains(text, "deployment/uwu-app") {
		t.Errorf("ls text output:\n%s", text)
	}

	completions := func(args ...string) []string {
		t.Helper()
		return strings.Split(tp(append([]string{"__complete"}, args...)...), "\n")
	}
	if got := completions("sandbox", "run", "-n", ns, "--target", "deployment/"); !slices.Contains(got, "deployment/uwu-app") ||
		slices.Contains(got, "service/uwu-service") {
		t.Errorf("--target completion for deployment/: %q", got)
	}
	if got := completions("sandbox", "run", "-n", ""); !slices.Contains(got, ns) || !slices.Contains(got, "default") {
		t.Errorf("-n completion: %q, want %s and default among them", got, ns)
	}
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if got := completions("ls", "--context", ""); !slices.Contains(got, cfg.CurrentContext) {
		t.Errorf("--context completion: %q, want %s", got, cfg.CurrentContext)
	}
}

// TestClearErrorsForBadTargets: a target that does not exist names the
// close ones; a user without RBAC grants is told which verb on which
// resource was denied; a pod with two containers and none chosen lists them.
func TestClearErrorsForBadTargets(t *testing.T) {
	c := need(t)
	ns := uwuNamespace(t, c, "tp-errors")
	cfg := map[string]any{"target": map[string]any{"path": "deployment/uwu-ap", "namespace": ns}, "agent": map[string]any{"image": c.AgentImage}}
	_, errOut, err := sandboxRun(t, c, cfg, "true")
	if err == nil || !strings.Contains(errOut, `deployment/uwu-ap not found in namespace "`+ns+`"; did you mean deployment/uwu-app?`) {
		t.Errorf("not found: err %v, stderr:\n%s", err, errOut)
	}
	if code := exitCode(err); code != 125 {
		t.Errorf("not found: exit status %d, want 125 (trafficpolice's own failure)", code)
	}

	kc, err := c.UserKubeconfig("tp-nobody")
	if err != nil {
		t.Fatal(err)
	}
	cfg = map[string]any{"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns}, "kubeconfig": kc}
	_, errOut, err = sandboxRun(t, c, cfg, "true")
	// The preflight asks the API server (SelfSubjectAccessReview) for
	// every permission the run needs, and stops before anything starts.
	for _, want := range []string{"preflight rbac: missing: get pods in namespace " + ns, "get deployments.apps in namespace " + ns,
		"create jobs.batch in namespace " + ns, "create pods/portforward in namespace " + ns, "ask a cluster admin for a Role"} {
		if err == nil || !strings.Contains(errOut, want) {
			t.Errorf("RBAC: err %v, want %q in stderr:\n%s", err, want, errOut)
		}
	}
	if strings.Contains(errOut, "agent started") {
		t.Errorf("RBAC: the run started an agent before the preflight stopped it:\n%s", errOut)
	}

	access, err := kube.Connect(kube.AccessOptions{Kubeconfig: c.Kubeconfig, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	p := targetPod(t, c, ns, "uwu-service")
	two := p.DeepCopy()
	two.ObjectMeta = metav1.ObjectMeta{Name: "two-containers", Namespace: ns}
	two.Spec.NodeName = ""
	two.Spec.Containers = append(two.Spec.Containers, c.appContainer("proxy", []string{"serve", "--listen", ":9090"}, nil))
	two.Status = corev1.PodStatus{}
	if _, err := c.Client.CoreV1().Pods(ns).Create(context.Background(), two, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.waitFor("pod two-containers to run", 60*time.Second, func() error {
		_, err := access.Resolve(context.Background(), "pod/two-containers/container/proxy", "")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_, err = access.Resolve(context.Background(), "pod/two-containers", "")
	if err == nil || !strings.Contains(err.Error(), "2 containers (uwu-service, proxy) and none is chosen") {
		t.Errorf("two containers: %v", err)
	}
	if _, err := access.Resolve(context.Background(), "service/uwu-service", ""); err != nil {
		t.Errorf("service/uwu-service should resolve to its pod: %v", err)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// TestPortForwardLatencyAndReconnect measures, in one run, the agent's round trip
// through an API-server port-forward against a direct TCP connection to
// the same agent (what --agent-address does). It asserts nothing about
// the numbers: they are logged for the README (timed assertions do not
// belong in tests). Then it drops the port-forward under the client,
// which must open a new one.
func TestPortForwardLatencyAndReconnect(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	ns, err := c.NewNamespace(ctx, "tp-latency")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.DeleteNamespace(context.Background(), ns) })
	const token = "latency-test-token"
	zero := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: ns},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name: "agent", Image: c.AgentImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Args: []string{"--listen", "0.0.0.0:7777"},
				Env:  []corev1.EnvVar{{Name: "TRAFFICPOLICE_AGENT_TOKEN", Value: token}},
			}},
		},
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip string
	if err := c.waitFor("the agent pod to run", 60*time.Second, func() error {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return errNotYet
		}
		ip = p.Status.PodIP
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	access, err := kube.Connect(kube.AccessOptions{Kubeconfig: c.Kubeconfig, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	pf := access.PortForward(ns, "agent", 7777)
	dial := func(o client.Options) *client.Client {
		o.Token = token
		var cl *client.Client
		if err := c.waitFor("the agent to answer", 30*time.Second, func() error {
			var err error
			cl, err = client.Dial(ctx, o)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	direct := dial(client.Options{Address: net.JoinHostPort(ip, "7777")})
	// Every port-forward is kept, so that the test can drop one.
	var mu sync.Mutex
	var conns []net.Conn
	forwarded := dial(client.Options{Dialer: func(ctx context.Context) (net.Conn, error) {
		c, err := pf.Dial(ctx)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}})
	measure := func(cl *client.Client) (p50, p99 time.Duration) {
		var rtts []time.Duration
		for i := 0; i < 200; i++ {
			d, err := cl.Ping(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rtts = append(rtts, d)
		}
		slices.Sort(rtts)
		return rtts[len(rtts)/2], rtts[len(rtts)*99/100]
	}
	measure(direct)
	measure(forwarded) // warm both paths
	d50, d99 := measure(direct)
	f50, f99 := measure(forwarded)
	t.Logf("agent round trip, 200 pings each: direct TCP (--agent-address) p50 %s p99 %s; API-server port-forward p50 %s p99 %s; added p50 %s",
		d50, d99, f50, f99, f50-d50)

	// A dropped port-forward is replaced: the client dials a new one.
	mu.Lock()
	conns[len(conns)-1].Close()
	mu.Unlock()
	if err := c.waitFor("the tunnel to come back over a new port-forward", 30*time.Second, func() error {
		_, err := forwarded.Ping(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) < 2 {
		t.Fatalf("after a dropped port-forward the client opened %d, want a new one", len(conns))
	}
}

// TestKilledRunsClusterObjectsAreCollected: a run killed while its agent's
// Job is still Pending (its image cannot be pulled) leaves the Job and
// the token's Secret; `sandbox gc` removes them through the run's record.
func TestKilledRunsClusterObjectsAreCollected(t *testing.T) {
	c := need(t)
	ns := uwuNamespace(t, c, "tp-killed")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	b, _ := json.Marshal(map[string]any{
		"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns},
		"agent":  map[string]any{"image": "localhost/trafficpolice/never-imported:1", "startup_timeout": 120},
	})
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t, c), "sandbox", "run", "-f", cfgPath, "--", "true")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	var errOut syncBuffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err := c.waitFor("the agent's Job", 60*time.Second, func() error {
		jobs, err := c.Client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
		if err != nil {
			return err
		}
		if len(jobs.Items) == 0 {
			return fmt.Errorf("no Job yet")
		}
		return nil
	})
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	cmd.Process.Kill()
	cmd.Wait()
	jobs, _ := c.Client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
	secrets, _ := c.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
	if len(jobs.Items) != 1 || len(secrets.Items) != 1 {
		t.Fatalf("after the kill: %d Jobs, %d Secrets; want the run's one of each, left behind", len(jobs.Items), len(secrets.Items))
	}
	gc := exec.Command(binary(t, c), "sandbox", "gc")
	gc.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	out, err := gc.CombinedOutput()
	if err != nil {
		t.Fatalf("sandbox gc: %v\n%s", err, out)
	}
	if want := "removed job " + ns + "/" + jobs.Items[0].Name; !strings.Contains(string(out), want) {
		t.Errorf("gc says %q, want %q", out, want)
	}
	err = c.waitFor("the killed run's Job and Secret to go", 60*time.Second, func() error {
		jobs, err := c.Client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
		if err != nil {
			return err
		}
		secrets, err := c.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.AgentLabel})
		if err != nil {
			return err
		}
		if len(jobs.Items)+len(secrets.Items) > 0 {
			return fmt.Errorf("%d Jobs, %d Secrets left", len(jobs.Items), len(secrets.Items))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
