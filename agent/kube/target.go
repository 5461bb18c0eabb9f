package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// DefaultContainerAnnotation names a pod's default container, as kubectl
// (exec, logs) reads it.
const DefaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// Target is a resolved target: one running pod and one of its containers.
type Target struct {
	Pod *corev1.Pod
	// Container is the container whose network namespace (shared by the
	// whole pod) and environment the app gets.
	Container string
	// ContainerID is the runtime's id, "containerd://…".
	ContainerID string
	// Path is the target as the user gave it ("deployment/uwu-app").
	Path string
}

// String describes the target for progress lines.
func (t *Target) String() string {
	return fmt.Sprintf("%s (pod %s/%s, container %s)", t.Path, t.Pod.Namespace, t.Pod.Name, t.Container)
}

// Resolve finds the pod and container that path names in namespace (""
// is the access's namespace): pod/NAME, deployment/NAME (or deploy),
// statefulset/NAME, replicaset/NAME, job/NAME or service/NAME, each
// optionally followed by /container/NAME. A workload or service must
// have a running, ready pod; the newest such pod is chosen.
func (a *Access) Resolve(ctx context.Context, path, namespace string) (*Target, error) {
	if namespace == "" {
		namespace = a.Namespace
	}
	parts := strings.Split(path, "/")
	if len(parts) != 2 && !(len(parts) == 4 && parts[2] == "container") {
		return nil, fmt.Errorf("target %q is not valid: use KIND/NAME or KIND/NAME/container/CONTAINER", path)
	}
	kind, name := parts[0], parts[1]
	container := ""
	if len(parts) == 4 {
		container = parts[3]
	}
	var pod *corev1.Pod
	var err error
	switch kind {
	case "pod":
		pod, err = a.getPod(ctx, namespace, name)
	case "deployment", "deploy", "statefulset", "replicaset", "job", "service":
		pod, err = a.podOf(ctx, kind, namespace, name)
	default:
		return nil, fmt.Errorf("target %q: kind %q is not supported: use pod, deployment, statefulset, replicaset, job or service", path, kind)
	}
	if err != nil {
		return nil, err
	}
	c, err := chooseContainer(pod, container)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", path, err)
	}
	t := &Target{Pod: pod, Container: c, Path: path}
	for _, st := range pod.Status.ContainerStatuses {
		if st.Name == c {
			t.ContainerID = st.ContainerID
		}
	}
	return t, nil
}

func (a *Access) getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	pod, err := a.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, a.notFound(ctx, err, "pod", "get", "pods", ns, name, a.podNames)
	}
	if why := notRunning(pod); why != "" {
		return nil, fmt.Errorf("pod/%s in namespace %q is not running: %s", name, ns, why)
	}
	return pod, nil
}

// podOf finds the selector of a workload or service and picks its pod.
func (a *Access) podOf(ctx context.Context, kind, ns, name string) (*corev1.Pod, error) {
	var sel labels.Selector
	var err error
	apps := a.Client.AppsV1()
	switch kind {
	case "deployment", "deploy":
		kind = "deployment"
		d, gerr := apps.Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			return nil, a.notFound(ctx, gerr, kind, "get", "deployments", ns, name, a.names("deployments"))
		}
		sel, err = metav1.LabelSelectorAsSelector(d.Spec.Selector)
	case "statefulset":
		s, gerr := apps.StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			return nil, a.notFound(ctx, gerr, kind, "get", "statefulsets", ns, name, a.names("statefulsets"))
		}
		sel, err = metav1.LabelSelectorAsSelector(s.Spec.Selector)
	case "replicaset":
		r, gerr := apps.ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			return nil, a.notFound(ctx, gerr, kind, "get", "replicasets", ns, name, a.names("replicasets"))
		}
		sel, err = metav1.LabelSelectorAsSelector(r.Spec.Selector)
	case "job":
		j, gerr := a.Client.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			return nil, a.notFound(ctx, gerr, kind, "get", "jobs", ns, name, a.names("jobs"))
		}
		sel, err = metav1.LabelSelectorAsSelector(j.Spec.Selector)
	case "service":
		s, gerr := a.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			return nil, a.notFound(ctx, gerr, kind, "get", "services", ns, name, a.names("services"))
		}
		if len(s.Spec.Selector) == 0 {
			return nil, fmt.Errorf("service/%s in namespace %q has no selector, so no pods: target a pod instead", name, ns)
		}
		sel = labels.SelectorFromSet(s.Spec.Selector)
	}
	if err != nil {
		return nil, fmt.Errorf("%s/%s: its selector: %w", kind, name, err)
	}
	pods, err := a.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, apiError(err, "list", "pods", ns)
	}
	var best *corev1.Pod
	var why []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if w := notRunning(p); w != "" {
			why = append(why, p.Name+": "+w)
			continue
		}
		if !ready(p) {
			why = append(why, p.Name+": not ready")
			continue
		}
		if best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best = p
		}
	}
	if best == nil {
		if len(pods.Items) == 0 {
			return nil, fmt.Errorf("%s/%s in namespace %q has no pods (selector %s)", kind, name, ns, sel)
		}
		return nil, fmt.Errorf("%s/%s in namespace %q has no running, ready pod: %s", kind, name, ns, strings.Join(why, "; "))
	}
	return best, nil
}

// notRunning says why a pod cannot be a target, or "" when it can.
func notRunning(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "it is being deleted"
	}
	if p.Status.Phase == corev1.PodRunning {
		return ""
	}
	why := "phase " + string(p.Status.Phase)
	for _, st := range p.Status.ContainerStatuses {
		if w := st.State.Waiting; w != nil {
			why += fmt.Sprintf(", container %s waiting: %s", st.Name, w.Reason)
			if w.Message != "" {
				why += " (" + w.Message + ")"
			}
		}
	}
	return why
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// chooseContainer checks the named container, or picks the only one (or
// the pod's default-container annotation's).
func chooseContainer(p *corev1.Pod, name string) (string, error) {
	var names []string
	for _, c := range p.Spec.Containers {
		names = append(names, c.Name)
	}
	if name == "" {
		switch {
		case len(names) == 1:
			return names[0], nil
		case slices.Contains(names, p.Annotations[DefaultContainerAnnotation]):
			return p.Annotations[DefaultContainerAnnotation], nil
		}
		return "", fmt.Errorf("pod %s has %d containers (%s) and none is chosen: add /container/NAME to the target, e.g. %q",
			p.Name, len(names), strings.Join(names, ", "), "pod/"+p.Name+"/container/"+names[0])
	}
	if !slices.Contains(names, name) {
		return "", fmt.Errorf("pod %s has no container %q; its containers: %s", p.Name, name, strings.Join(names, ", "))
	}
	for _, st := range p.Status.ContainerStatuses {
		if st.Name == name && st.State.Running == nil {
			return "", fmt.Errorf("container %s of pod %s is not running", name, p.Name)
		}
	}
	return name, nil
}

// notFound turns a Get error into a NotFoundError with close names, or
// an RBAC or API error.
func (a *Access) notFound(ctx context.Context, err error, kind, verb, resource, ns, name string, list func(context.Context, string) ([]string, error)) error {
	if !isNotFound(err) {
		return apiError(err, verb, resource, ns)
	}
	nf := &NotFoundError{Kind: kind, Name: name, Namespace: ns}
	if all, lerr := list(ctx, ns); lerr == nil {
		nf.Close = closeNames(name, all)
	}
	return nf
}

func (a *Access) podNames(ctx context.Context, ns string) ([]string, error) {
	l, err := a.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range l.Items {
		out = append(out, p.Name)
	}
	return out, nil
}

// names lists the names of a resource kind, through the metadata-only
// path of the typed clients.
func (a *Access) names(resource string) func(context.Context, string) ([]string, error) {
	return func(ctx context.Context, ns string) ([]string, error) {
		var out []string
		opts := metav1.ListOptions{}
		switch resource {
		case "deployments":
			l, err := a.Client.AppsV1().Deployments(ns).List(ctx, opts)
			if err != nil {
				return nil, err
			}
			for _, x := range l.Items {
				out = append(out, x.Name)
			}
		case "statefulsets":
			l, err := a.Client.AppsV1().StatefulSets(ns).List(ctx, opts)
			if err != nil {
				return nil, err
			}
			for _, x := range l.Items {
				out = append(out, x.Name)
			}
		case "replicasets":
			l, err := a.Client.AppsV1().ReplicaSets(ns).List(ctx, opts)
			if err != nil {
				return nil, err
			}
			for _, x := range l.Items {
				out = append(out, x.Name)
			}
		case "jobs":
			l, err := a.Client.BatchV1().Jobs(ns).List(ctx, opts)
			if err != nil {
				return nil, err
			}
			for _, x := range l.Items {
				out = append(out, x.Name)
			}
		case "services":
			l, err := a.Client.CoreV1().Services(ns).List(ctx, opts)
			if err != nil {
				return nil, err
			}
			for _, x := range l.Items {
				out = append(out, x.Name)
			}
		}
		return out, nil
	}
}
