package preflight

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trafficpolice/trafficpolice/agent/kube"
)

// ClusterNeeds say what a run will do in its cluster, so that the checks
// ask for exactly the permissions it needs.
type ClusterNeeds struct {
	// Namespace is the target's namespace ("" is the context's).
	Namespace string
	// TargetKind is the target's kind (pod, deployment, …); "" for a
	// targetless run.
	TargetKind string
	// AgentNamespace is where the agent's Job goes ("" is the target's).
	AgentNamespace string
	// Ephemeral: the agent is an ephemeral container of the target pod.
	Ephemeral bool
	// Env: feature.env reads the target's ConfigMaps and Secrets.
	Env bool
}

// permission is one verb on one resource that a run may need.
type permission struct {
	verb, group, resource, subresource, namespace string
	// why says what the run does with it; optional ones only warn.
	why      string
	optional bool
}

func (p permission) String() string {
	res := p.resource
	if p.subresource != "" {
		res += "/" + p.subresource
	}
	if p.group != "" {
		res += "." + p.group
	}
	return fmt.Sprintf("%s %s in namespace %s", p.verb, res, p.namespace)
}

// targetResources are the resources a target of each kind is read from.
var targetResources = map[string]struct{ group, resource string }{
	"deployment":  {"apps", "deployments"},
	"statefulset": {"apps", "statefulsets"},
	"replicaset":  {"apps", "replicasets"},
	"job":         {"batch", "jobs"},
	"service":     {"", "services"},
}

// needed lists the permissions a run with these needs asks for.
func needed(n ClusterNeeds, ns string) []permission {
	agentNS := n.AgentNamespace
	if agentNS == "" {
		agentNS = ns
	}
	ps := []permission{}
	if n.TargetKind != "" {
		ps = append(ps, permission{verb: "get", resource: "pods", namespace: ns, why: "find the target pod"},
			permission{verb: "list", resource: "pods", namespace: ns, why: "find the target's pods"})
		if r, ok := targetResources[n.TargetKind]; ok {
			ps = append(ps, permission{verb: "get", group: r.group, resource: r.resource, namespace: ns, why: "read the target " + n.TargetKind})
		}
	}
	if n.Ephemeral {
		ps = append(ps, permission{verb: "update", resource: "pods", subresource: "ephemeralcontainers", namespace: ns, why: "add the agent to the target pod"})
	} else {
		ps = append(ps, permission{verb: "create", group: "batch", resource: "jobs", namespace: agentNS, why: "start the agent's Job"},
			permission{verb: "delete", group: "batch", resource: "jobs", namespace: agentNS, why: "remove the agent's Job when the run ends"},
			permission{verb: "get", group: "batch", resource: "jobs", namespace: agentNS, why: "see whether the agent runs on the pod share is still there"},
			permission{verb: "list", resource: "pods", namespace: agentNS, why: "find the agent's pod"})
	}
	secretNS := agentNS
	if n.Ephemeral {
		secretNS = ns
	}
	// The tunnel is a port-forward to the target pod, in whose network
	// namespace the agent listens; a targetless agent's is its own pod.
	forwardNS := ns
	if n.TargetKind == "" {
		forwardNS = agentNS
	}
	ps = append(ps, permission{verb: "create", resource: "secrets", namespace: secretNS, why: "hand the agent its token"},
		permission{verb: "get", resource: "secrets", namespace: secretNS, why: "join the agent another run started on the pod (its token)"},
		permission{verb: "update", resource: "secrets", namespace: secretNS, why: "tie the token's Secret to the agent"},
		permission{verb: "delete", resource: "secrets", namespace: secretNS, why: "remove the token when the run ends"},
		permission{verb: "create", resource: "pods", subresource: "portforward", namespace: forwardNS, why: "tunnel to the agent"})
	if n.Env && n.TargetKind != "" {
		if secretNS != ns { // else asked for already, not optional
			ps = append(ps, permission{verb: "get", resource: "secrets", namespace: ns, why: "feature.env: the spec's secretKeyRef values", optional: true})
		}
		ps = append(ps, permission{verb: "get", resource: "configmaps", namespace: ns, why: "feature.env: the spec's configMapKeyRef values", optional: true})
	}
	return ps
}

// checkCluster checks the kubeconfig, that the cluster answers, and
// every permission the run needs, asked with SelfSubjectAccessReview.
func checkCluster(ctx context.Context, env Env) []Result {
	kc := Result{Check: "kubeconfig"}
	opts := *env.Kube
	if env.Cluster.Namespace != "" {
		opts.Namespace = env.Cluster.Namespace
	}
	access, err := kube.Connect(opts)
	if err != nil {
		kc.Status, kc.Detail = Fail, err.Error()
		kc.Fix = "pass --kubeconfig FILE or set KUBECONFIG (under sudo, trafficpolice reads the invoking user's ~/.kube/config)"
		return []Result{kc}
	}
	kc.Status = OK
	kc.Detail = fmt.Sprintf("context %q at %s, namespace %s, from %s", access.Context, access.REST.Host, access.Namespace, access.Source)
	rs := []Result{kc}

	reach := Result{Check: "cluster"}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	v, err := access.Client.Discovery().ServerVersion()
	if err != nil {
		reach.Status, reach.Detail = Fail, fmt.Sprintf("%s does not answer: %v", access.REST.Host, err)
		reach.Fix = "check the network path to the API server, and that the kubeconfig's credentials are current (kubectl version)"
		return append(rs, reach)
	}
	reach.Status, reach.Detail = OK, "Kubernetes "+v.GitVersion
	rs = append(rs, reach)
	return append(rs, checkRBAC(ctx, access, needed(env.Cluster, access.Namespace)))
}

func checkRBAC(ctx context.Context, access *kube.Access, ps []permission) Result {
	r := Result{Check: "rbac"}
	// One review per permission, all at once: each is an API round trip.
	allowed := make([]bool, len(ps))
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			review := &authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{
				ResourceAttributes: &authv1.ResourceAttributes{Namespace: p.namespace, Verb: p.verb, Group: p.group, Resource: p.resource, Subresource: p.subresource},
			}}
			got, err := access.Client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
			if err == nil {
				allowed[i] = got.Status.Allowed
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	var denied, warned []string
	for i, p := range ps {
		if errs[i] != nil {
			r.Status, r.Detail = Fail, fmt.Sprintf("cannot ask the API server about permissions: %v", errs[i])
			r.Fix = "the user needs create on selfsubjectaccessreviews.authorization.k8s.io (every authenticated user has it by default)"
			return r
		}
		if allowed[i] {
			continue
		}
		line := p.String() + " (to " + p.why + ")"
		if p.optional {
			warned = append(warned, line)
		} else {
			denied = append(denied, line)
		}
	}
	switch {
	case len(denied) > 0:
		r.Status, r.Detail = Fail, "missing: "+strings.Join(denied, "; ")
		r.Fix = "ask a cluster admin for a Role with these verbs, bound to you (kubectl auth can-i VERB RESOURCE -n NS checks one)"
	case len(warned) > 0:
		r.Status, r.Detail = Warn, "missing: "+strings.Join(warned, "; ")
		r.Fix = "without them the app gets only the environment the target's process shows"
	default:
		r.Status, r.Detail = OK, fmt.Sprintf("all %d permissions the run needs are granted", len(ps))
	}
	return r
}
