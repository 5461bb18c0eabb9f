package kube

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// TargetInfo is one thing a run may target, as `trafficpolice ls` lists
// it.
type TargetInfo struct {
	// Path is the target as --target takes it: KIND/NAME.
	Path string `json:"path"`
	// Containers are the containers of its pods (for a workload, of its
	// pod template); /container/NAME picks one.
	Containers []string `json:"containers"`
	// Status says whether it can be a target now: "running", or why not.
	Status string `json:"status"`
}

// listKinds are the kinds ListTargets lists, in its order: what Resolve
// takes, each once.
var listKinds = []string{"pod", "deployment", "statefulset", "replicaset", "job", "service"}

// ListTargets lists what a run may target in namespace ns ("" for the
// Access's): pods, deployments, statefulsets, replicasets owned by no
// deployment, jobs and services with a selector, sorted by kind then
// name. A kind the user may not list is left out, and named in skipped.
func (a *Access) ListTargets(ctx context.Context, ns string) (targets []TargetInfo, skipped []string, err error) {
	if ns == "" {
		ns = a.Namespace
	}
	opts := metav1.ListOptions{}
	add := func(kind, name string, spec corev1.PodSpec, status string) {
		var cs []string
		for _, c := range spec.Containers {
			cs = append(cs, c.Name)
		}
		targets = append(targets, TargetInfo{Path: kind + "/" + name, Containers: cs, Status: status})
	}
	skip := func(resource string, err error) error {
		if apierrors.IsForbidden(err) {
			skipped = append(skipped, resource)
			return nil
		}
		return apiError(err, "list", resource, ns)
	}
	pods, err := a.Client.CoreV1().Pods(ns).List(ctx, opts)
	if err != nil {
		if err := skip("pods", err); err != nil {
			return nil, nil, err
		}
	} else {
		for _, p := range pods.Items {
			status := "running"
			if w := notRunning(&p); w != "" {
				status = w
			} else if !ready(&p) {
				status = "not ready"
			}
			add("pod", p.Name, p.Spec, status)
		}
	}
	apps := a.Client.AppsV1()
	if l, err := apps.Deployments(ns).List(ctx, opts); err != nil {
		if err := skip("deployments", err); err != nil {
			return nil, nil, err
		}
	} else {
		for _, d := range l.Items {
			add("deployment", d.Name, d.Spec.Template.Spec, replicas(d.Status.ReadyReplicas, d.Status.Replicas))
		}
	}
	if l, err := apps.StatefulSets(ns).List(ctx, opts); err != nil {
		if err := skip("statefulsets", err); err != nil {
			return nil, nil, err
		}
	} else {
		for _, s := range l.Items {
			add("statefulset", s.Name, s.Spec.Template.Spec, replicas(s.Status.ReadyReplicas, s.Status.Replicas))
		}
	}
	if l, err := apps.ReplicaSets(ns).List(ctx, opts); err != nil {
		if err := skip("replicasets", err); err != nil {
			return nil, nil, err
		}
	} else {
		for _, r := range l.Items {
			// A deployment's replica sets are its history: target the deployment.
			if slices.ContainsFunc(r.OwnerReferences, func(o metav1.OwnerReference) bool { return o.Kind == "Deployment" }) {
				continue
			}
			add("replicaset", r.Name, r.Spec.Template.Spec, replicas(r.Status.ReadyReplicas, r.Status.Replicas))
		}
	}
	if l, err := a.Client.BatchV1().Jobs(ns).List(ctx, opts); err != nil {
		if err := skip("jobs", err); err != nil {
			return nil, nil, err
		}
	} else {
		for _, j := range l.Items {
			// trafficpolice's own agents are Jobs too: not targets.
			if j.Labels[AgentLabel] == agentLabelValue {
				continue
			}
			add("job", j.Name, j.Spec.Template.Spec, fmt.Sprintf("%d active", j.Status.Active))
		}
	}
	if l, err := a.Client.CoreV1().Services(ns).List(ctx, opts); err != nil {
		if err := skip("services", err); err != nil {
			return nil, nil, err
		}
	} else {
		for _, s := range l.Items {
			if len(s.Spec.Selector) == 0 {
				continue // no pods to target
			}
			add("service", s.Name, corev1.PodSpec{}, "selects pods")
		}
	}
	sort.SliceStable(targets, func(i, j int) bool {
		ki, _, _ := strings.Cut(targets[i].Path, "/")
		kj, _, _ := strings.Cut(targets[j].Path, "/")
		if ki != kj {
			return slices.Index(listKinds, ki) < slices.Index(listKinds, kj)
		}
		return targets[i].Path < targets[j].Path
	})
	return targets, skipped, nil
}

func replicas(ready, total int32) string {
	return fmt.Sprintf("%d/%d ready", ready, total)
}

// Namespaces lists the cluster's namespaces, for completion.
func (a *Access) Namespaces(ctx context.Context) ([]string, error) {
	l, err := a.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, apiError(err, "list", "namespaces", "")
	}
	var out []string
	for _, n := range l.Items {
		out = append(out, n.Name)
	}
	return out, nil
}

// Contexts lists the contexts of the kubeconfig o names (as Connect
// finds it), for completion; it does not talk to a cluster.
func Contexts(o AccessOptions) ([]string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.Kubeconfig != "" {
		rules.ExplicitPath = o.Kubeconfig
	} else if p := sudoUserKubeconfig(); p != "" && rules.ExplicitPath == "" && len(rules.Precedence) <= 1 {
		rules.Precedence = []string{p}
	}
	raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).RawConfig()
	if err != nil {
		return nil, err
	}
	var out []string
	for name := range raw.Contexts {
		out = append(out, name)
	}
	sort.Strings(out)
	return out, nil
}
