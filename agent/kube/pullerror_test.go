package kube

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// agentPod is a Job's agent pod on node-a whose container "agent" waits
// with the kubelet's reason and message.
func agentPod(image, reason, message string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "trafficpolice-agent-abc123-x7k2p", Namespace: "shop"},
		Spec: corev1.PodSpec{
			NodeName:           "node-a",
			ServiceAccountName: "default",
			Containers:         []corev1.Container{{Name: "agent", Image: image}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Name:  "agent",
			Image: image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}},
		}}},
	}
}

func wantAll(t *testing.T, err error, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%s", w, err)
		}
	}
}

func wantNone(t *testing.T, err error, nots ...string) {
	t.Helper()
	for _, w := range nots {
		if strings.Contains(err.Error(), w) {
			t.Errorf("error has %q, which does not fit:\n%s", w, err)
		}
	}
}

// The messages below are the kubelet's, as containerd's CRI reports them.
func TestPullErrorsSayTheImageTheNodeAndWhatToDo(t *testing.T) {
	t.Run("never pulled", func(t *testing.T) {
		p := agentPod("localhost/trafficpolice/agent:v1.2.0", "ErrImageNeverPull",
			`Container image "localhost/trafficpolice/agent:v1.2.0" is not present with pull policy of Never`)
		err := pullError(p, p.Status.ContainerStatuses[0], false, nil)
		wantAll(t, err, "ErrImageNeverPull", "is not present with pull policy of Never", "localhost/trafficpolice/agent:v1.2.0",
			"node node-a", "trafficpolice images push agent.tar REGISTRY/trafficpolice/agent:v1.2.0", "agent.image",
			"--ref localhost/trafficpolice/agent:v1.2.0", "trafficpolice images import -n k8s.io agent.tar", "kubectl describe pod trafficpolice-agent-abc123-x7k2p -n shop")
	})
	t.Run("unauthorized", func(t *testing.T) {
		p := agentPod("registry.corp.example/tools/trafficpolice-agent:v1.2.0", "ErrImagePull",
			`failed to pull and unpack image "registry.corp.example/tools/trafficpolice-agent:v1.2.0": failed to resolve reference `+
				`"registry.corp.example/tools/trafficpolice-agent:v1.2.0": pulling from host registry.corp.example failed with status code `+
				`[manifests v1.2.0]: 401 Unauthorized`)
		err := pullError(p, p.Status.ContainerStatuses[0], false, nil)
		wantAll(t, err, "ErrImagePull", "401 Unauthorized", "node node-a", "registry.corp.example/tools/trafficpolice-agent:v1.2.0",
			"Registry registry.corp.example refused", "kubectl create secret docker-registry trafficpolice-pull -n shop --docker-server=registry.corp.example",
			`kubectl patch serviceaccount default -n shop -p '{"imagePullSecrets":[{"name":"trafficpolice-pull"}]}'`,
			"trafficpolice images push registry.corp.example/tools/trafficpolice-agent:v1.2.0 REGISTRY/trafficpolice/agent:v1.2.0")
		wantNone(t, err, "images import")
	})
	t.Run("unauthorized, ephemeral", func(t *testing.T) {
		p := agentPod("registry.corp.example/tp/agent:v1", "ErrImagePull", `... failed to fetch anonymous token: unexpected status from GET request to https://registry.corp.example/token: 403 Forbidden`)
		p.Name = "uwu-app-7d9c5-abcde"
		err := pullError(p, p.Status.ContainerStatuses[0], true, nil)
		wantAll(t, err, "ephemeral container of pod uwu-app-7d9c5-abcde", "imagePullSecrets of the pod's workload")
		wantNone(t, err, "kubectl patch serviceaccount")
	})
	t.Run("not found", func(t *testing.T) {
		p := agentPod("ghcr.io/trafficpolice/agent:v9.9.9", "ErrImagePull",
			`rpc error: code = NotFound desc = failed to pull and unpack image "ghcr.io/trafficpolice/agent:v9.9.9": failed to resolve reference `+
				`"ghcr.io/trafficpolice/agent:v9.9.9": ghcr.io/trafficpolice/agent:v9.9.9: not found`)
		err := pullError(p, p.Status.ContainerStatuses[0], false, nil)
		wantAll(t, err, "Registry ghcr.io has no image trafficpolice/agent:v9.9.9",
			"trafficpolice images push agent.tar ghcr.io/trafficpolice/agent:v9.9.9", "set agent.image")
	})
	t.Run("wrong platform", func(t *testing.T) {
		p := agentPod("registry.example.com/tp/agent:v1", "ErrImagePull",
			`failed to pull and unpack image "registry.example.com/tp/agent:v1": no match for platform in manifest: not found`)
		err := pullError(p, p.Status.ContainerStatuses[0], false, nil)
		wantAll(t, err, "no build for node node-a's platform", "linux/amd64 and linux/arm64")
		wantNone(t, err, "has no image")
	})
	t.Run("a port that looks like a status", func(t *testing.T) {
		p := agentPod("10.0.0.9:4031/tp/agent:v1", "ErrImagePull",
			`failed to pull and unpack image "10.0.0.9:4031/tp/agent:v1": failed to do request: Head "https://10.0.0.9:4031/v2/tp/agent/manifests/v1": dial tcp 10.0.0.9:4031: connect: connection refused`)
		err := pullError(p, p.Status.ContainerStatuses[0], false, nil)
		wantAll(t, err, "could not fetch it from registry 10.0.0.9:4031", "connection refused")
		wantNone(t, err, "refused the node's pull")
	})
	t.Run("unreachable", func(t *testing.T) {
		p := agentPod("ghcr.io/trafficpolice/agent:v1", "ErrImagePull",
			`failed to pull and unpack image "ghcr.io/trafficpolice/agent:v1": failed to resolve reference "ghcr.io/trafficpolice/agent:v1": `+
				`failed to do request: Head "https://ghcr.io/v2/trafficpolice/agent/manifests/v1": dial tcp: lookup ghcr.io: no such host`)
		err := pullError(p, p.Status.ContainerStatuses[0], false, nil)
		wantAll(t, err, "could not fetch it from registry ghcr.io", "no such host",
			"trafficpolice images push ghcr.io/trafficpolice/agent:v1 REGISTRY/trafficpolice/agent:v1", "image pull secret")
	})
}

// TestBackOffTakesItsCauseFromTheEvents: a back-off's own message only
// says the kubelet waits; the last pull failure's event says why.
func TestBackOffTakesItsCauseFromTheEvents(t *testing.T) {
	p := agentPod("registry.corp.example/tp/agent:v1", "ImagePullBackOff", `Back-off pulling image "registry.corp.example/tp/agent:v1"`)
	at := func(sec int) metav1.Time { return metav1.NewTime(time.Unix(1700000000+int64(sec), 0)) }
	event := func(pod, reason, msg string, sec int) corev1.Event {
		return corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: pod + "." + reason, Namespace: "shop"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: pod, Namespace: "shop", FieldPath: "spec.containers{agent}"},
			Reason:         reason, Message: msg, LastTimestamp: at(sec),
		}
	}
	events := []corev1.Event{
		event(p.Name, "Failed", `Failed to pull image "registry.corp.example/tp/agent:v1": dial tcp 10.0.0.9:443: i/o timeout`, 1),
		event(p.Name, "Failed", `Failed to pull image "registry.corp.example/tp/agent:v1": failed to resolve reference: 401 Unauthorized`, 5),
		event(p.Name, "BackOff", `Back-off pulling image "registry.corp.example/tp/agent:v1"`, 6),
		event("other-pod", "Failed", `Failed to pull image "x": 404 not found`, 9),
	}
	err := pullError(p, p.Status.ContainerStatuses[0], false, events)
	wantAll(t, err, "ImagePullBackOff", "401 Unauthorized", "refused", "pull secret")
	wantNone(t, err, "i/o timeout", "404")
}

// TestWaitRunningReportsPullFailures goes through waitRunning as
// StartAgent does, with the pod (and its events) in a fake API server.
func TestWaitRunningReportsPullFailures(t *testing.T) {
	p := agentPod("registry.corp.example/tp/agent:v1", "ImagePullBackOff", `Back-off pulling image "registry.corp.example/tp/agent:v1"`)
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "ev1", Namespace: "shop"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: p.Name, Namespace: "shop"},
		Reason:         "Failed",
		Message:        `Failed to pull image "registry.corp.example/tp/agent:v1": rpc error: code = NotFound desc = registry.corp.example/tp/agent:v1: not found`,
	}
	a := &Access{Client: fake.NewClientset(p, ev), Namespace: "shop"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.waitRunning(ctx, "shop", p.Name, "agent", false)
	var pe *ImagePullError
	if !errors.As(err, &pe) {
		t.Fatalf("waitRunning: %T %v, want an *ImagePullError", err, err)
	}
	if pe.Node != "node-a" || pe.Image != "registry.corp.example/tp/agent:v1" || pe.Reason != "ImagePullBackOff" || !strings.Contains(pe.Message, "not found") {
		t.Fatalf("ImagePullError %+v", pe)
	}
	wantAll(t, err, "Registry registry.corp.example has no image tp/agent:v1")

	// A container that crashes is no pull failure.
	crashed := agentPod("registry.corp.example/tp/agent:v1", "CrashLoopBackOff", "back-off 10s restarting failed container")
	crashed.Name = "crashed"
	a = &Access{Client: fake.NewClientset(crashed), Namespace: "shop"}
	err = a.waitRunning(ctx, "shop", "crashed", "agent", false)
	if err == nil || errors.As(err, &pe) || !strings.Contains(err.Error(), "CrashLoopBackOff") {
		t.Fatalf("a crash: %T %v", err, err)
	}
}

// TestPullSecretsReachTheJobAndTheAdvice: agent.image_pull_secrets go
// into the Job's pod spec, and a refused pull with them says to check them.
func TestPullSecretsReachTheJobAndTheAdvice(t *testing.T) {
	job := agentJob("shop", "trafficpolice-agent-abc123", nil, nil, nil, AgentOptions{Image: "registry.corp.example/tp/agent:v1", ImagePullSecrets: []string{"regcred"}})
	ps := job.Spec.Template.Spec.ImagePullSecrets
	if len(ps) != 1 || ps[0].Name != "regcred" {
		t.Fatalf("job pull secrets %v, want regcred", ps)
	}
	p := agentPod("registry.corp.example/tp/agent:v1", "ErrImagePull", `failed to resolve reference: 401 Unauthorized`)
	p.Spec.ImagePullSecrets = ps
	err := pullError(p, p.Status.ContainerStatuses[0], false, nil)
	wantAll(t, err, "the pod's pull secrets (regcred) did not do", "kubectl get secret regcred -n shop", `agent.image_pull_secrets: [{"name": "trafficpolice-pull"}]`)
}
