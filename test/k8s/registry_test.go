package k8s

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// TestAgentStartsFromARegistryPull mirrors the agent image, with
// `trafficpolice images push`, to a tag of the cluster's registry that the
// node has never seen, and runs against a deployment with that agent
// image: the kubelet pulls it (its event says so, and the registry served
// the manifest to containerd), the run works, and containerd then holds it.
func TestAgentStartsFromARegistryPull(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	ns := uwuNamespace(t, c, "tp-pull-ok")
	tag := "pull-" + netnstest.Suffix(t)
	ref := c.Registry + "/" + AgentRepo + ":" + tag
	if out, err := exec.CommandContext(ctx, binary(t, c), "images", "push", c.AgentImage, ref).CombinedOutput(); err != nil {
		t.Fatalf("trafficpolice images push %s %s: %v\n%s", c.AgentImage, ref, err, out)
	}
	t.Cleanup(func() { ctr("images", "rm", ref).Run() })
	if containerdHas(t, ref) {
		t.Fatalf("containerd's k8s.io namespace already holds %s before the run", ref)
	}
	cfg := map[string]any{
		"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns},
		"agent":  map[string]any{"image": ref, "startup_timeout": 60, "ttl": 0},
	}
	out, errOut, err := sandboxRun(t, c, cfg, "getent hosts uwu-service")
	if err != nil {
		t.Fatalf("sandbox run with agent.image %s: %v\nstdout:\n%s\nstderr:\n%s\nkubelet:\n%s", ref, err, out, errOut, c.Logs("kubelet", 15))
	}
	if !containerdHas(t, ref) {
		t.Errorf("containerd's k8s.io namespace lacks %s after the run", ref)
	}
	events, err := c.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pulled []string
	var mine []corev1.Event // the events that name ref, for the failure message
	for _, e := range events.Items {
		if strings.Contains(e.Message, ref) {
			mine = append(mine, e)
		}
		if e.InvolvedObject.Kind == "Pod" && e.Reason == "Pulled" && strings.Contains(e.Message, ref) {
			pulled = append(pulled, e.Message)
		}
	}
	if len(pulled) != 1 || !strings.HasPrefix(pulled[0], `Successfully pulled image "`+ref+`"`) {
		t.Errorf("want one kubelet event `Successfully pulled image %q`, got %q; the cluster's events:\n%s", ref, pulled, eventLines(mine))
	}
	log, err := c.RegistryLog()
	if err != nil {
		t.Fatal(err)
	}
	var served bool
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "/v2/"+AgentRepo+"/manifests/"+tag+" ") && strings.Contains(line, "containerd") {
			served = true
		}
	}
	if !served {
		t.Errorf("the registry's access log has no request for manifest %s by containerd:\n%s", tag, lastLines(log, 20))
	}
}

// containerdHas says whether containerd's k8s.io namespace (the CRI's)
// holds an image named ref.
func containerdHas(t *testing.T, ref string) bool {
	t.Helper()
	out, err := ctr("images", "ls", "-q").Output()
	if err != nil {
		t.Fatalf("ctr images ls: %v", exitDetail(err))
	}
	for _, name := range strings.Fields(string(out)) {
		if name == ref {
			return true
		}
	}
	return false
}

func eventLines(events []corev1.Event) string {
	var b strings.Builder
	for _, e := range events {
		b.WriteString(e.InvolvedObject.Kind + "/" + e.InvolvedObject.Name + " " + e.Reason + ": " + e.Message + "\n")
	}
	return b.String()
}
