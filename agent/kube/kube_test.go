package kube

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestCloseNamesSuggestsTyposAndPrefixes(t *testing.T) {
	got := closeNames("uwu-ap", []string{"uwu-app", "uwu-service", "messages-db"})
	if len(got) != 1 || got[0] != "uwu-app" {
		t.Fatalf("closeNames(uwu-ap) = %v, want [uwu-app]", got)
	}
	if got := closeNames("zzz", []string{"uwu-app"}); len(got) != 0 {
		t.Fatalf("closeNames(zzz) = %v, want none", got)
	}
	if got := closeNames("uwu", []string{"uwu-app", "uwu-service", "db"}); len(got) != 2 {
		t.Fatalf("closeNames(uwu) = %v, want the two containing it", got)
	}
}

func TestNotFoundErrorNamesCloseTargets(t *testing.T) {
	e := &NotFoundError{Kind: "deployment", Name: "uwu-ap", Namespace: "default", Close: []string{"uwu-app"}}
	want := `deployment/uwu-ap not found in namespace "default"; did you mean deployment/uwu-app?`
	if e.Error() != want {
		t.Fatalf("got  %s\nwant %s", e, want)
	}
	e.Close = nil
	if !strings.Contains(e.Error(), "kubectl get deployment -n default") {
		t.Fatalf("without close names the error should say how to list them: %s", e)
	}
}

func TestForbiddenBecomesRBACErrorNamingVerbAndResource(t *testing.T) {
	err := apiError(apierrors.NewForbidden(schema.GroupResource{Resource: "deployments"}, "uwu-app", errors.New("no")), "get", "deployments", "prod")
	var rbac *RBACError
	if !errors.As(err, &rbac) {
		t.Fatalf("got %T %v, want *RBACError", err, err)
	}
	for _, want := range []string{"RBAC denied", "get deployments", `namespace "prod"`, "kubectl auth can-i get deployments -n prod"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}

func TestChooseContainer(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: "proxy"}}}}
	_, err := chooseContainer(pod, "")
	if err == nil || !strings.Contains(err.Error(), "2 containers (app, proxy) and none is chosen") {
		t.Fatalf("two containers, none chosen: got %v", err)
	}
	if _, err := chooseContainer(pod, "db"); err == nil || !strings.Contains(err.Error(), `no container "db"; its containers: app, proxy`) {
		t.Fatalf("unknown container: got %v", err)
	}
	pod.Annotations = map[string]string{DefaultContainerAnnotation: "proxy"}
	if c, err := chooseContainer(pod, ""); err != nil || c != "proxy" {
		t.Fatalf("default-container annotation: got %q, %v", c, err)
	}
	one := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "only"}}}}
	if c, err := chooseContainer(one, ""); err != nil || c != "only" {
		t.Fatalf("one container: got %q, %v", c, err)
	}
}

func TestNotRunningSaysWhy(t *testing.T) {
	p := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "app", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull"}}}}}}
	if got := notRunning(p); got != "phase Pending, container app waiting: ErrImageNeverPull" {
		t.Fatalf("notRunning = %q", got)
	}
	p.Status.Phase = corev1.PodRunning
	if got := notRunning(p); got != "" {
		t.Fatalf("a running pod: %q", got)
	}
}

func TestExpandFollowsKubelet(t *testing.T) {
	env := map[string]string{"HOST": "db", "PORT": "5432"}
	for in, want := range map[string]string{
		"$(HOST):$(PORT)": "db:5432",
		"$$(HOST)":        "$(HOST)",
		"$(MISSING)":      "$(MISSING)",
		"plain $":         "plain $",
	} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFilterEnv(t *testing.T) {
	env := map[string]string{"A": "1", "B_X": "2", "SECRET_KEY": "s", "C": "3"}
	got := FilterEnv(env, nil, []string{"SECRET_*"}, map[string]string{"C": "local"})
	if _, ok := got["SECRET_KEY"]; ok || got["C"] != "local" || got["A"] != "1" {
		t.Fatalf("exclude/override: %v", got)
	}
	got = FilterEnv(env, []string{"A", "B_?"}, nil, nil)
	if len(got) != 2 || got["B_X"] != "2" {
		t.Fatalf("include: %v", got)
	}
}

func TestPodFieldDownwardAPI(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: "n1"},
		Status:     corev1.PodStatus{PodIP: "10.0.0.7"},
	}
	for field, want := range map[string]string{
		"metadata.name": "web-1", "metadata.namespace": "shop", "spec.nodeName": "n1",
		"status.podIP": "10.0.0.7", "metadata.labels['app']": "web",
	} {
		if got, err := podField(p, field); err != nil || got != want {
			t.Errorf("podField(%s) = %q, %v; want %q", field, got, err, want)
		}
	}
	if _, err := podField(p, "spec.bogus"); err == nil {
		t.Error("an unknown field must be an error")
	}
}

func writeKubeconfig(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "config")
	body := `apiVersion: v1
kind: Config
clusters:
- {name: a, cluster: {server: "https://127.0.0.1:1"}}
- {name: b, cluster: {server: "https://127.0.0.1:2"}}
users:
- {name: u, user: {token: t}}
contexts:
- {name: one, context: {cluster: a, user: u, namespace: shop}}
- {name: two, context: {cluster: b, user: u}}
current-context: one
`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConnectReadsKubeconfigLikeKubectl(t *testing.T) {
	p := writeKubeconfig(t, t.TempDir())
	t.Setenv("KUBECONFIG", "")
	a, err := Connect(AccessOptions{Kubeconfig: p})
	if err != nil {
		t.Fatal(err)
	}
	if a.REST.Host != "https://127.0.0.1:1" || a.Namespace != "shop" {
		t.Fatalf("current context: host %s namespace %s", a.REST.Host, a.Namespace)
	}
	a, err = Connect(AccessOptions{Kubeconfig: p, Context: "two"})
	if err != nil {
		t.Fatal(err)
	}
	if a.REST.Host != "https://127.0.0.1:2" || a.Namespace != "default" {
		t.Fatalf("--context two: host %s namespace %s", a.REST.Host, a.Namespace)
	}
	a, err = Connect(AccessOptions{Kubeconfig: p, Namespace: "ops"})
	if err != nil || a.Namespace != "ops" {
		t.Fatalf("-n ops: %v %v", a, err)
	}
	t.Setenv("KUBECONFIG", p)
	// File is what a killed run's record reaches the cluster again with,
	// whatever environment `sandbox gc` has.
	if a, err = Connect(AccessOptions{}); err != nil || a.Namespace != "shop" || a.File != p {
		t.Fatalf("$KUBECONFIG: %+v %v, want namespace shop from file %s", a, err, p)
	}
	t.Setenv("KUBECONFIG", p+string(filepath.ListSeparator)+p)
	if a, err = Connect(AccessOptions{}); err != nil || a.File != "" {
		t.Fatalf("$KUBECONFIG list: %+v %v, want no single file", a, err)
	}
	if _, err := Connect(AccessOptions{Kubeconfig: p, Context: "nope"}); err == nil || !strings.Contains(err.Error(), `context "nope"`) {
		t.Fatalf("unknown context: %v", err)
	}
}

func TestConnectWithoutAnyConfigSaysWhatToDo(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SUDO_USER", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err := Connect(AccessOptions{})
	if err == nil || !strings.Contains(err.Error(), "pass --kubeconfig FILE or set KUBECONFIG") {
		t.Fatalf("got %v", err)
	}
}
