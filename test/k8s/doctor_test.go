package k8s

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/preflight"
)

// TestDoctorOnTheCluster runs `trafficpolice doctor` against the real
// cluster and registry: every check passes for the cluster's admin with
// the pushed agent image (the registry is asked for it, RBAC with one
// SelfSubjectAccessReview per verb); an image the registry lacks fails the
// agent image check with how to push it; a user with no role fails the
// RBAC check, naming the verbs it lacks.
func TestDoctorOnTheCluster(t *testing.T) {
	c := need(t)
	ns := uwuNamespace(t, c, "tp-doctor")
	doctor := func(t *testing.T, image, kubeconfig string) (int, map[string]preflight.Result) {
		t.Helper()
		dir := t.TempDir()
		cfgPath := filepath.Join(dir, "config.json")
		b, _ := json.Marshal(map[string]any{
			"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns},
			"agent":  map[string]any{"image": image},
		})
		if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary(t, c), "doctor", "-f", cfgPath, "-o", "json", "--kubeconfig", kubeconfig)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := exitCode(err)
		var rs []preflight.Result
		if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
			t.Fatalf("doctor -o json (exit %d): %v\nstdout:\n%s\nstderr:\n%s", code, err, out.String(), errOut.String())
		}
		byCheck := map[string]preflight.Result{}
		for _, r := range rs {
			byCheck[r.Check] = r
		}
		return code, byCheck
	}

	t.Run("admin", func(t *testing.T) {
		code, rs := doctor(t, c.AgentImage, c.Kubeconfig)
		for _, check := range []string{"kubeconfig", "cluster", "rbac", "agent image"} {
			if r, ok := rs[check]; !ok || r.Status != preflight.OK {
				t.Errorf("check %s: %+v, want ok", check, r)
			}
		}
		if code != 0 {
			t.Errorf("doctor exited %d with every check ok: %+v", code, rs)
		}
		if d := rs["agent image"].Detail; !strings.Contains(d, "is in its registry") {
			t.Errorf("agent image: %q, want that the registry has it", d)
		}
	})

	t.Run("image-missing", func(t *testing.T) {
		repo, _, _ := strings.Cut(c.AgentImage, ":"+AgentTag)
		missing := repo + ":never-pushed-" + netnstest.Suffix(t)
		code, rs := doctor(t, missing, c.Kubeconfig)
		r := rs["agent image"]
		if r.Status != preflight.Fail || !strings.Contains(r.Fix, "trafficpolice images push agent.tar "+missing) {
			t.Errorf("agent image check for %s: %+v, want fail with how to push it", missing, r)
		}
		if code == 0 {
			t.Error("doctor exited 0 with a failed check")
		}
	})

	t.Run("no-rbac", func(t *testing.T) {
		kubeconfig, err := c.UserKubeconfig("tp-doctor-" + netnstest.Suffix(t))
		if err != nil {
			t.Fatal(err)
		}
		code, rs := doctor(t, c.AgentImage, kubeconfig)
		if r := rs["kubeconfig"]; r.Status != preflight.OK {
			t.Errorf("kubeconfig check: %+v, want ok", r)
		}
		r := rs["rbac"]
		for _, want := range []string{"create jobs.batch in namespace " + ns, "create pods/portforward in namespace " + ns, "get deployments.apps in namespace " + ns} {
			if !strings.Contains(r.Detail, want) {
				t.Errorf("rbac check: %q does not name %q", r.Detail, want)
			}
		}
		if r.Status != preflight.Fail || !strings.Contains(r.Fix, "kubectl auth can-i") {
			t.Errorf("rbac check: %+v, want fail with the fix", r)
		}
		if code == 0 {
			t.Error("doctor exited 0 with a failed check")
		}
	})
}
