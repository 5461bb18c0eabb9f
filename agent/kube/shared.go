package kube

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Runs on the same target pod share one agent: two agents would both
// redirect the pod's ports, and the newer would silently take them (and
// the older's steal would be reported as working while it is not). The
// agent is found by a Secret whose name follows from the target pod's UID,
// its container, the image and the mode, so that runs that would start the
// same agent meet at one name; creating that Secret is the lock (the API
// server lets one create win), and it holds the token and says which Job
// or container the agent is and on which port it listens. A run that finds
// it joins the agent through a port-forward of its own; one that does not
// creates it and starts the agent. Whoever may read Secrets in the
// namespace (as whoever may start an agent there must) can join.

// Labels and annotations of a shared agent's objects.
const (
	// sharedLabel names the shared Secret on the Secret, Job and pod.
	sharedLabel = "trafficpolice.dev/shared"
	// targetUIDLabel names the target pod (by UID: names can be longer
	// than a label value).
	targetUIDLabel = "trafficpolice.dev/target-pod-uid"
	nameAnnotation = "trafficpolice.dev/agent-name"
	portAnnotation = "trafficpolice.dev/agent-port"
	podAnnotation  = "trafficpolice.dev/target-pod"
	modeAnnotation = "trafficpolice.dev/agent-mode"
)

// errLostRace: another run created the shared Secret first.
var errLostRace = errors.New("another run started the shared agent first")

// errNoSharedAgent: no agent to join.
var errNoSharedAgent = errors.New("no shared agent for this target pod")

// orphanAfter is how long a shared Secret may name a Job that does not
// exist (its run creates the Job right after the Secret) before it is
// taken for the remains of a run killed in between.
const orphanAfter = 10 * time.Second

// StartOrJoinAgent is StartAgent for runs that share: it joins the agent
// another run started on t's pod with the same image and mode, and starts
// one (which later runs join) when there is none or it is leaving. A
// targetless run starts an agent of its own.
func (a *Access) StartOrJoinAgent(ctx context.Context, t *Target, o AgentOptions) (*Agent, error) {
	if t == nil {
		return a.StartAgent(ctx, nil, o)
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.StartupTimeout)
	defer cancel()
	for {
		ag, err := a.joinShared(ctx, t, o)
		if !errors.Is(err, errNoSharedAgent) {
			return ag, err
		}
		ag, err = a.startShared(ctx, t, o)
		if !errors.Is(err, errLostRace) {
			return ag, err
		}
		step(o, "another run started the agent for this pod at the same moment: joining it")
	}
}

// sharedSecretName is the name every run that would start the same agent
// for t computes.
func sharedSecretName(t *Target, o AgentOptions) string {
	h := sha256.Sum256([]byte(string(t.Pod.UID) + "\x00" + t.Container + "\x00" + o.Image + "\x00" + sharedMode(o)))
	return "trafficpolice-shared-" + hex.EncodeToString(h[:6])
}

func sharedMode(o AgentOptions) string {
	switch {
	case o.Ephemeral && o.Privileged:
		return "ephemeral-privileged"
	case o.Ephemeral:
		return "ephemeral"
	}
	return "job"
}

// startShared creates the shared Secret (errLostRace when another run
// did first) and starts the agent it names.
func (a *Access) startShared(ctx context.Context, t *Target, o AgentOptions) (*Agent, error) {
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	secret := sharedSecretName(t, o)
	ag, err := a.newAgent(t, o, secret+"-"+id, secret)
	if err != nil {
		return nil, err
	}
	ag.Shared = true
	ag.targetUID = t.Pod.UID
	ag.mode = sharedMode(o)
	return a.launch(ctx, t, ag, o)
}

// joinShared finds the shared agent for t and waits until it runs. A
// Secret that names an agent that is gone (exited, deleted, or never
// created by a run killed in between) is removed, and errNoSharedAgent
// returned: the caller starts a new one.
func (a *Access) joinShared(ctx context.Context, t *Target, o AgentOptions) (*Agent, error) {
	name := sharedSecretName(t, o)
	ns := a.jobNamespace(t, o)
	if o.Ephemeral {
		ns = t.Pod.Namespace
	}
	var orphanSince time.Time
	var orphanUID types.UID
	for {
		s, err := a.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if isNotFound(err) {
			return nil, errNoSharedAgent
		}
		if err != nil {
			return nil, apiError(err, "get", "secrets", ns)
		}
		ag, err := a.sharedAgentOf(s)
		if err != nil {
			// Not what a run of ours writes: leave it, and say so.
			return nil, fmt.Errorf("secret %s/%s: %w: delete it if no trafficpolice run uses it", ns, name, err)
		}
		state, err := a.sharedState(ctx, ag)
		if err != nil {
			return nil, err
		}
		switch state {
		case agentRunning:
			step(o, fmt.Sprintf("joined the agent another run started on pod %s (%s)", t.Pod.Name, ag.Name))
			return ag, nil
		case agentGone:
			if err := ag.Close(ctx); err != nil {
				return nil, fmt.Errorf("remove the agent that left pod %s: %w", t.Pod.Name, err)
			}
			continue
		case agentNotCreated:
			if orphanUID != s.UID {
				orphanUID, orphanSince = s.UID, time.Now()
			}
			if time.Since(orphanSince) > orphanAfter {
				if err := ag.Close(ctx); err != nil {
					return nil, fmt.Errorf("remove the remains of a run killed while it started an agent on pod %s: %w", t.Pod.Name, err)
				}
				continue
			}
		}
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return nil, fmt.Errorf("the agent another run started on pod %s/%s did not start in time", t.Pod.Namespace, t.Pod.Name)
		}
	}
}

// sharedAgentOf reads the agent a shared Secret describes.
func (a *Access) sharedAgentOf(s *corev1.Secret) (*Agent, error) {
	port, err := strconv.Atoi(s.Annotations[portAnnotation])
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("annotation %s %q is not a port", portAnnotation, s.Annotations[portAnnotation])
	}
	name := s.Annotations[nameAnnotation]
	if name == "" {
		return nil, fmt.Errorf("annotation %s is missing", nameAnnotation)
	}
	token := string(s.Data[tokenKey])
	if token == "" {
		return nil, fmt.Errorf("it holds no %q", tokenKey)
	}
	podNS, pod, ok := strings.Cut(s.Annotations[podAnnotation], "/")
	if !ok || podNS == "" || pod == "" {
		return nil, fmt.Errorf("annotation %s %q is not NAMESPACE/POD", podAnnotation, s.Annotations[podAnnotation])
	}
	mode := s.Annotations[modeAnnotation]
	ag := &Agent{
		Name: name, Port: port, Namespace: podNS, Pod: pod,
		SecretNamespace: s.Namespace, SecretName: s.Name, Token: token,
		Shared: true, Joined: true, Ephemeral: mode != "job",
		access: a, secretUID: s.UID, targetUID: types.UID(s.Labels[targetUIDLabel]), mode: mode,
	}
	if !ag.Ephemeral {
		ag.JobNamespace = s.Namespace
	}
	return ag, nil
}

// sharedAgentState is where a shared agent is in its life.
type sharedAgentState int

const (
	agentStarting   sharedAgentState = iota // created, not yet running
	agentNotCreated                         // the Secret exists, its Job or container not (yet)
	agentRunning
	agentGone // exited or deleted: the Secret is stale
)

// sharedState looks once at the agent's Job and pod (or ephemeral
// container). A pull failure or a refused container is an error, as for
// an agent of one's own.
func (a *Access) sharedState(ctx context.Context, ag *Agent) (sharedAgentState, error) {
	if ag.Ephemeral {
		p, err := a.Client.CoreV1().Pods(ag.Namespace).Get(ctx, ag.Pod, metav1.GetOptions{})
		if err != nil {
			return 0, apiError(err, "get", "pods", ag.Namespace)
		}
		return a.containerState(ctx, p, p.Status.EphemeralContainerStatuses, ag.Name, true)
	}
	job, err := a.Client.BatchV1().Jobs(ag.JobNamespace).Get(ctx, ag.Name, metav1.GetOptions{})
	switch {
	case isNotFound(err):
		return agentNotCreated, nil
	case err != nil:
		return 0, apiError(err, "get", "jobs", ag.JobNamespace)
	case job.DeletionTimestamp != nil || job.Status.Succeeded > 0 || job.Status.Failed > 0:
		return agentGone, nil
	}
	pods, err := a.Client.CoreV1().Pods(ag.JobNamespace).List(ctx, metav1.ListOptions{LabelSelector: "trafficpolice.dev/agent=" + ag.Name})
	if err != nil {
		return 0, apiError(err, "list", "pods", ag.JobNamespace)
	}
	if len(pods.Items) == 0 {
		return agentStarting, nil
	}
	p := &pods.Items[0]
	return a.containerState(ctx, p, p.Status.ContainerStatuses, "agent", false)
}

// containerState is the state of the agent's container in p.
func (a *Access) containerState(ctx context.Context, p *corev1.Pod, statuses []corev1.ContainerStatus, name string, ephemeral bool) (sharedAgentState, error) {
	if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		return agentGone, nil
	}
	for _, st := range statuses {
		if st.Name != name {
			continue
		}
		switch {
		case st.State.Running != nil:
			return agentRunning, nil
		case st.State.Terminated != nil:
			return agentGone, nil
		}
		if err := a.waitingError(ctx, p, st, ephemeral); err != nil {
			return 0, err
		}
		return agentStarting, nil
	}
	if ephemeral {
		for _, ec := range p.Spec.EphemeralContainers {
			if ec.Name == name {
				return agentStarting, nil
			}
		}
		return agentNotCreated, nil
	}
	return agentStarting, nil
}

// labels are those of the agent's Secret, Job and pod.
func (ag *Agent) labels(o AgentOptions) map[string]string {
	labels := map[string]string{AgentLabel: agentLabelValue, "trafficpolice.dev/agent": ag.Name}
	if ag.Shared {
		labels[sharedLabel] = ag.SecretName
		labels[targetUIDLabel] = string(ag.targetUID)
	}
	for k, v := range o.Labels {
		labels[k] = v
	}
	return labels
}

// annotations tell the runs that join a shared agent where it is.
func (ag *Agent) annotations() map[string]string {
	if !ag.Shared {
		return nil
	}
	return map[string]string{
		nameAnnotation: ag.Name,
		portAnnotation: strconv.Itoa(ag.Port),
		podAnnotation:  ag.Namespace + "/" + ag.Pod,
		modeAnnotation: cmp.Or(ag.mode, "job"),
	}
}

// inUse says whether the object (kind "secret" or "job") is a shared
// agent's that runs: a killed run's record names the shared agent it
// started, which others may have joined since, and a running agent ends by
// itself once its last client is gone. One still starting has no client
// yet (runs waiting to join it start another when it goes).
func (a *Access) inUse(ctx context.Context, kind, namespace, name string) (bool, error) {
	var secretName string
	switch kind {
	case "secret":
		secretName = name
	case "job":
		job, err := a.Client.BatchV1().Jobs(namespace).Get(ctx, name, metav1.GetOptions{})
		if isNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, apiError(err, "get", "jobs", namespace)
		}
		secretName = job.Labels[sharedLabel]
	}
	if secretName == "" {
		return false, nil
	}
	s, err := a.Client.CoreV1().Secrets(namespace).Get(ctx, secretName, metav1.GetOptions{})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, apiError(err, "get", "secrets", namespace)
	}
	if s.Labels[sharedLabel] == "" {
		return false, nil
	}
	ag, err := a.sharedAgentOf(s)
	if err != nil {
		return false, nil
	}
	if kind == "job" && ag.Name != name {
		return false, nil // the Secret names a newer agent: this Job is not it
	}
	state, err := a.sharedState(ctx, ag)
	if err != nil {
		return false, nil // failing to start: nobody uses it
	}
	return state == agentRunning, nil
}
