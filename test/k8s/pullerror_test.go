package k8s

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestAgentImagePullFailuresSayWhatToDo starts the agent from images the
// node cannot get, as a real cluster would fail: a localhost image the
// node does not hold (never pulled) and one from a registry nobody serves.
// The run stops with the kubelet's reason, the image, the node and what to
// do, and leaves no agent Job behind.
func TestAgentImagePullFailuresSayWhatToDo(t *testing.T) {
	c := need(t)
	ns := uwuNamespace(t, c, "tp-pull")
	node := targetPod(t, c, ns, "uwu-app").Spec.NodeName
	for _, tc := range []struct {
		image string
		wants []string
	}{
		{"localhost/trafficpolice/agent:never-imported", []string{"ErrImageNeverPull",
			"trafficpolice images push agent.tar REGISTRY/trafficpolice/agent:never-imported", "agent.image"}},
		// Port 1 on the node: nothing listens, the pull is refused at once.
		{"127.0.0.1:1/trafficpolice/agent:nowhere", []string{"ErrImagePull", "connection refused",
			"could not fetch it from registry 127.0.0.1:1",
			"trafficpolice images push 127.0.0.1:1/trafficpolice/agent:nowhere REGISTRY/trafficpolice/agent:nowhere"}},
	} {
		cfg := map[string]any{
			"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns},
			"agent":  map[string]any{"image": tc.image, "startup_timeout": 60},
		}
		_, errOut, err := sandboxRun(t, c, cfg, "true")
		t.Logf("agent.image %s:\n%s", tc.image, errOut)
		if code := exitCode(err); code != 125 {
			t.Errorf("%s: exit status %d, want 125\n%s", tc.image, code, errOut)
		}
		wants := append([]string{"could not get the agent image " + tc.image, "node " + node, "kubectl describe pod"}, tc.wants...)
		for _, want := range wants {
			if !strings.Contains(errOut, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.image, want, errOut)
			}
		}
		jobs, err := c.Client.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=trafficpolice"})
		if err != nil || len(jobs.Items) != 0 {
			t.Errorf("%s: agent jobs left: %v (%v)", tc.image, len(jobs.Items), err)
		}
		// What the run created is gone, so its record is too: nothing
		// waits on this machine for a gc.
		records, _ := filepath.Glob("/run/trafficpolice/cluster-*.json")
		for _, r := range records {
			if b, err := os.ReadFile(r); err == nil && strings.Contains(string(b), ns) {
				t.Errorf("%s: the failed run's record %s is left:\n%s", tc.image, r, b)
			}
		}
	}
}
