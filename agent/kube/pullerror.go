package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImagePullError says that a node could not get the agent's image: the
// kubelet's reason beside the image, the node and what to do.
type ImagePullError struct {
	// Image is the agent's image as the pod names it.
	Image string
	// Node is the node that tried to get it.
	Node string
	// Namespace and Pod are the agent's pod (the target pod for an
	// ephemeral agent).
	Namespace, Pod string
	// Reason and Message are the kubelet's: ErrImageNeverPull,
	// ErrImagePull, ImagePullBackOff…; for a back-off, Message is the last
	// pull failure's event when there is one.
	Reason, Message string
	// Ephemeral says the agent is an ephemeral container of the target
	// pod, which pulls with that pod's pull secrets.
	Ephemeral bool
	// ServiceAccount is the pod's service account, whose image pull
	// secrets a Job's pod pulls with.
	ServiceAccount string
	// PullSecrets are the pod's own image pull secrets
	// (agent.image_pull_secrets for a Job's pod).
	PullSecrets []string
}

// pullCause is what a failed pull comes down to, as the kubelet's message
// tells it.
type pullCause int

const (
	causeOther pullCause = iota
	causeNeverPull
	causeRefused
	causeNotFound
	causePlatform
)

func (e *ImagePullError) cause() pullCause {
	if e.Reason == "ErrImageNeverPull" {
		return causeNeverPull
	}
	msg := strings.ToLower(e.Message)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(msg, w) {
				return true
			}
		}
		return false
	}
	switch {
	// Words, not bare status codes, which a registry's port could hold.
	case has("unauthorized", "forbidden", "denied", "authentication required", "authorization failed", "no basic auth credentials"):
		return causeRefused
	case has("no match for platform", "no matching manifest"):
		return causePlatform
	case has("not found", "manifest unknown", "name unknown"):
		return causeNotFound
	}
	return causeOther
}

func (e *ImagePullError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "agent in pod %s/%s cannot start: node %s could not get the agent image %s (%s", e.Namespace, e.Pod, e.Node, e.Image, e.Reason)
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", strings.TrimSpace(e.Message))
	}
	b.WriteString(")\n")
	reg, repo, tag := splitImage(e.Image)
	mirror := "REGISTRY/trafficpolice/agent:" + tag
	pushMirror := fmt.Sprintf("`trafficpolice images push %s %s` (from a machine that can pull it)", e.Image, mirror)
	switch e.cause() {
	case causeNeverPull:
		fmt.Fprintf(&b, "A localhost/ image is never pulled: the node must hold it already, and %s does not. Either\n", e.Node)
		fmt.Fprintf(&b, "  - push the agent image to a registry the nodes pull from and set agent.image to it:\n")
		fmt.Fprintf(&b, "    `trafficpolice images build agent -o agent.tar && trafficpolice images push agent.tar %s`,\n", mirror)
		fmt.Fprintf(&b, "    then agent.image: \"%s\" in the config file (or leave agent.image unset for the project's published image), or\n", mirror)
		fmt.Fprintf(&b, "  - import it on node %s: `trafficpolice images build agent -o agent.tar --ref %s`, then on the node\n", e.Node, e.Image)
		b.WriteString("    `trafficpolice images import -n k8s.io agent.tar`.")
	case causeRefused:
		fmt.Fprintf(&b, "Registry %s refused the node's pull. Nodes pull with image pull secrets, not with your docker login:\n", reg)
		b.WriteString(e.pullSecretAdvice(reg))
		fmt.Fprintf(&b, "\n  - or mirror the image into a registry the nodes may pull from, %s, and set agent.image to it.", pushMirror)
	case causeNotFound:
		fmt.Fprintf(&b, "Registry %s has no image %s:%s. Either\n", reg, repo, tag)
		fmt.Fprintf(&b, "  - push it there: `trafficpolice images build agent -o agent.tar && trafficpolice images push agent.tar %s`, or\n", e.Image)
		fmt.Fprintf(&b, "  - set agent.image to an agent image that exists (releases are published as %s).", "ghcr.io/trafficpolice/agent:VERSION")
	case causePlatform:
		fmt.Fprintf(&b, "The image has no build for node %s's platform (see `kubectl get node %s -o jsonpath='{.status.nodeInfo.architecture}'`):\n", e.Node, e.Node)
		fmt.Fprintf(&b, "  push the multi-platform agent image (`trafficpolice images build agent` makes linux/amd64 and linux/arm64):\n")
		fmt.Fprintf(&b, "  `trafficpolice images build agent -o agent.tar && trafficpolice images push agent.tar %s`, and set agent.image to it.", mirror)
	default:
		fmt.Fprintf(&b, "Node %s could not fetch it from registry %s (network, DNS, TLS or a rate limit). Either\n", e.Node, reg)
		fmt.Fprintf(&b, "  - push it to a registry the nodes reach: `trafficpolice images build agent -o agent.tar && trafficpolice images push agent.tar %s`\n", mirror)
		fmt.Fprintf(&b, "    (a build of your own: this binary's agent), or mirror it there, %s;\n", pushMirror)
		b.WriteString("    then set agent.image to it (add an image pull secret if that registry wants a login), or\n")
		b.WriteString("  - let the nodes reach " + reg + ".")
	}
	fmt.Fprintf(&b, "\nDetails: kubectl describe pod %s -n %s", e.Pod, e.Namespace)
	return b.String()
}

// pullSecretAdvice says how to give the agent's pod a pull secret for reg.
func (e *ImagePullError) pullSecretAdvice(reg string) string {
	create := fmt.Sprintf("kubectl create secret docker-registry trafficpolice-pull -n %s --docker-server=%s --docker-username=USER --docker-password=PASSWORD", e.Namespace, reg)
	var given string
	if len(e.PullSecrets) > 0 {
		given = fmt.Sprintf("  - the pod's pull secrets (%s) did not do: check that they hold credentials for %s that may pull %s\n"+
			"    (`kubectl get secret %s -n %s -o jsonpath='{.data.\\.dockerconfigjson}' | base64 -d`), or\n",
			strings.Join(e.PullSecrets, ", "), reg, e.Image, e.PullSecrets[0], e.Namespace)
	}
	if e.Ephemeral {
		return given + fmt.Sprintf("  - the agent is an ephemeral container of pod %s, which pulls with that pod's own secrets:\n"+
			"    `%s`, then add it to the imagePullSecrets of the pod's workload (or its service account %s),", e.Pod, create, e.serviceAccount())
	}
	return given + fmt.Sprintf("  - create a pull secret for the agent's pod: `%s`,\n"+
		"    then give it in the config file, agent.image_pull_secrets: [{\"name\": \"trafficpolice-pull\"}], or add it to\n"+
		"    service account %s of namespace %s, which the agent's pod runs as:\n"+
		"    `kubectl patch serviceaccount %s -n %s -p '{\"imagePullSecrets\":[{\"name\":\"trafficpolice-pull\"}]}'`,",
		create, e.serviceAccount(), e.Namespace, e.serviceAccount(), e.Namespace)
}

func (e *ImagePullError) serviceAccount() string {
	if e.ServiceAccount == "" {
		return "default"
	}
	return e.ServiceAccount
}

// splitImage returns an image reference's registry, repository path and
// tag ("latest" when it has none), as the kubelet reads it.
func splitImage(image string) (registry, repo, tag string) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "its registry", image, "TAG"
	}
	tag = "latest"
	if t, ok := named.(reference.Tagged); ok {
		tag = t.Tag()
	}
	return reference.Domain(named), reference.Path(named), tag
}

// isPullReason says whether a waiting container's reason is a failure to
// get its image.
func isPullReason(reason string) bool {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull":
		return true
	}
	return false
}

// pullError describes a container of pod p that waits on its image.
// events are the pod's, whose last pull failure explains a back-off.
func pullError(p *corev1.Pod, st corev1.ContainerStatus, ephemeral bool, events []corev1.Event) *ImagePullError {
	e := &ImagePullError{
		Image:          containerImage(p, st),
		Node:           p.Spec.NodeName,
		Namespace:      p.Namespace,
		Pod:            p.Name,
		Reason:         st.State.Waiting.Reason,
		Message:        st.State.Waiting.Message,
		Ephemeral:      ephemeral,
		ServiceAccount: p.Spec.ServiceAccountName,
	}
	for _, s := range p.Spec.ImagePullSecrets {
		e.PullSecrets = append(e.PullSecrets, s.Name)
	}
	if e.Node == "" {
		e.Node = "(not scheduled)"
	}
	if e.Reason == "ImagePullBackOff" {
		if msg := lastPullFailure(events, p.Name, st.Name); msg != "" {
			e.Message = msg
		}
	}
	return e
}

// containerImage is the image the container was given.
func containerImage(p *corev1.Pod, st corev1.ContainerStatus) string {
	for _, c := range p.Spec.Containers {
		if c.Name == st.Name {
			return c.Image
		}
	}
	for _, c := range p.Spec.EphemeralContainers {
		if c.Name == st.Name {
			return c.Image
		}
	}
	return st.Image
}

// lastPullFailure is the message of the newest "Failed" event about the
// image of the pod's container, "" when there is none.
func lastPullFailure(events []corev1.Event, pod, container string) string {
	var failed []corev1.Event
	for _, ev := range events {
		if ev.InvolvedObject.Name != pod || ev.Reason != "Failed" || !strings.Contains(strings.ToLower(ev.Message), "pull") {
			continue
		}
		if fp := ev.InvolvedObject.FieldPath; fp != "" && !strings.Contains(fp, "{"+container+"}") {
			continue
		}
		failed = append(failed, ev)
	}
	if len(failed) == 0 {
		return ""
	}
	sort.SliceStable(failed, func(i, j int) bool { return eventTime(failed[i]).Before(eventTime(failed[j])) })
	return failed[len(failed)-1].Message
}

func eventTime(ev corev1.Event) time.Time {
	if !ev.LastTimestamp.IsZero() {
		return ev.LastTimestamp.Time
	}
	if !ev.EventTime.IsZero() {
		return ev.EventTime.Time
	}
	return ev.FirstTimestamp.Time
}

// podEvents lists the pod's events for a back-off's cause; none when
// they may not be read (the error then has the kubelet's reason alone).
func (a *Access) podEvents(ctx context.Context, ns, pod string) []corev1.Event {
	list, err := a.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Pod,involvedObject.name=" + pod})
	if err != nil {
		return nil
	}
	return list.Items
}
