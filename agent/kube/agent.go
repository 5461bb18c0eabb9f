package kube

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trafficpolice/trafficpolice/agent/enter"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/images"
)

// AgentOptions say how to start the agent, as mirrord's agent.* keys.
type AgentOptions struct {
	// Image is the agent's image (its entrypoint is `trafficpolice agent`).
	Image string
	// ImagePullSecrets name the Secrets (in the Job's namespace) the
	// Job's pod pulls Image with; an ephemeral agent pulls with the
	// target pod's own.
	ImagePullSecrets []string
	// Namespace is where the Job runs; "" is the target's namespace.
	Namespace string
	// Ephemeral starts the agent as an ephemeral container in the target
	// pod; otherwise as a Job on the target's node that enters the pod's
	// network namespace.
	Ephemeral bool
	// Privileged runs the agent's container privileged (a Job's always is:
	// entering another container's namespace takes it).
	Privileged bool
	// TTL is how long a finished Job stays (ttlSecondsAfterFinished).
	TTL time.Duration
	// StartupTimeout bounds waiting for the agent to run.
	StartupTimeout time.Duration
	// CommunicationTimeout is how long the agent lives with no client.
	CommunicationTimeout time.Duration
	// Token is the run's shared secret, given to the agent in its environment.
	Token string
	// Labels are added to what is created (tests find their agents by them).
	Labels map[string]string
	// OnStep, when set, is told of progress ("agent job created").
	OnStep func(string)
	// OnCreate, when set, is told of each object before it is created
	// (kind "secret" or "job"), so that a record of it exists before it
	// does: a run killed at any moment can have it removed. An error stops
	// the start.
	OnCreate func(kind, namespace, name string) error
	// OnForget, when set, is told of an object OnCreate announced that
	// this run did not create after all: another run created the shared
	// agent's Secret first.
	OnForget func(kind, namespace, name string)
}

// AgentLabel marks every object trafficpolice creates for an agent.
const AgentLabel = "app.kubernetes.io/managed-by"

// agentLabelValue is AgentLabel's value.
const agentLabelValue = "trafficpolice"

// DefaultAgentImage is the agent image for a given trafficpolice version,
// as `trafficpolice images build agent` names it.
func DefaultAgentImage(version string) string {
	return images.AgentRepo + ":" + version
}

// Agent is an agent started in a target pod's network namespace.
type Agent struct {
	// Name is the ephemeral container's or the Job's name.
	Name string
	// Ephemeral says which of the two it is.
	Ephemeral bool
	// Namespace and Pod are where to port-forward: the target pod, whose
	// network namespace the agent listens in (on loopback only).
	Namespace, Pod string
	// Port is the agent's port in the pod.
	Port int
	// JobNamespace is where the Job is.
	JobNamespace string
	// SecretNamespace and SecretName are where the Secret holding the
	// token is (named as the Job, or for a shared agent as the target pod
	// and agent options), removed with the Job or the target pod.
	SecretNamespace, SecretName string
	// Token is what clients present to the agent (from the Secret, for an
	// agent this run joined).
	Token string
	// Shared says other runs on the same target pod may join the agent;
	// Joined, that this run joined one another run started.
	Shared, Joined bool

	access    *Access
	secretUID types.UID // the shared Secret's, so that a stale one is deleted only as it was seen
	targetUID types.UID // a shared agent's target pod
	mode      string    // a shared agent's mode (sharedMode)
}

// StartAgent starts the agent for target and waits until its process
// runs. The agent listens on 127.0.0.1 of the target pod: only a
// port-forward (or the pod itself) reaches it. A nil target is
// "targetless": the agent runs in a pod of its own (a Job, in
// o.Namespace or the access's namespace), for outgoing traffic only.
// The agent is this run's alone; StartOrJoinAgent shares one.
func (a *Access) StartAgent(ctx context.Context, t *Target, o AgentOptions) (*Agent, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	ag, err := a.newAgent(t, o, "trafficpolice-agent-"+id, "")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.StartupTimeout)
	defer cancel()
	return a.launch(ctx, t, ag, o)
}

// withDefaults checks o and fills in its zero timeouts.
func (o AgentOptions) withDefaults() (AgentOptions, error) {
	if o.Image == "" {
		return o, errors.New("agent options: Image is empty: give agent.image")
	}
	if o.Token == "" {
		return o, errors.New("agent options: Token is empty")
	}
	if o.StartupTimeout <= 0 {
		o.StartupTimeout = 60 * time.Second
	}
	if o.CommunicationTimeout <= 0 {
		o.CommunicationTimeout = 30 * time.Second
	}
	return o, nil
}

// newAgent describes an agent named name (its Job or ephemeral
// container) on a port of its own, whose token is in the Secret
// secretName ("" means name), without creating anything.
func (a *Access) newAgent(t *Target, o AgentOptions, name, secretName string) (*Agent, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(20000))
	if err != nil {
		return nil, fmt.Errorf("pick the agent's port: %w", err)
	}
	ag := &Agent{
		Name:       name,
		Ephemeral:  o.Ephemeral && t != nil,
		Port:       40000 + int(n.Int64()),
		SecretName: cmp.Or(secretName, name),
		Token:      o.Token,
		access:     a,
	}
	if t != nil {
		ag.Namespace, ag.Pod = t.Pod.Namespace, t.Pod.Name
	}
	// The token reaches the agent through a Secret, not as a value in the
	// pod spec, which whoever may read pods can read (an ephemeral
	// container's spec can never be removed).
	ag.SecretNamespace = a.jobNamespace(t, o)
	if ag.Ephemeral {
		ag.SecretNamespace = t.Pod.Namespace
	}
	return ag, nil
}

// launch creates ag's Secret, then its Job or ephemeral container, and
// waits until the agent's process runs. On error it removes what it
// created.
func (a *Access) launch(ctx context.Context, t *Target, ag *Agent, o AgentOptions) (*Agent, error) {
	args := []string{
		"--listen", "127.0.0.1:" + strconv.Itoa(ag.Port),
		"--idle-exit", max(o.CommunicationTimeout, time.Second).String(),
		"--communication-timeout", o.CommunicationTimeout.String(),
	}
	if err := a.createTokenSecret(ctx, ag, o); err != nil {
		return nil, err
	}
	env := []corev1.EnvVar{{Name: proto.EnvToken, ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: ag.SecretName}, Key: tokenKey},
	}}}
	var err error
	switch {
	case t == nil:
		err = a.startJob(ctx, nil, ag, args, env, o)
	case o.Ephemeral:
		err = a.startEphemeral(ctx, t, ag, args, env, o)
	default:
		err = a.startJob(ctx, t, ag, args, env, o)
	}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w (agent.startup_timeout is %s)", err, o.StartupTimeout)
		}
		cleanup, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		ag.Close(cleanup)
		ccancel()
		return nil, err
	}
	return ag, nil
}

func (a *Access) startEphemeral(ctx context.Context, t *Target, ag *Agent, args []string, env []corev1.EnvVar, o AgentOptions) error {
	caps := []corev1.Capability{"NET_ADMIN", "NET_RAW"}
	ec := corev1.EphemeralContainer{
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name:            ag.Name,
			Image:           o.Image,
			ImagePullPolicy: pullPolicy(o.Image),
			Args:            args,
			Env:             env,
			SecurityContext: &corev1.SecurityContext{
				Privileged:   &o.Privileged,
				Capabilities: &corev1.Capabilities{Add: caps},
				RunAsUser:    new(int64),
				RunAsNonRoot: new(bool),
			},
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		},
		TargetContainerName: t.Container,
	}
	pods := a.Client.CoreV1().Pods(t.Pod.Namespace)
	pod, err := pods.Get(ctx, t.Pod.Name, metav1.GetOptions{})
	if err != nil {
		return apiError(err, "get", "pods", t.Pod.Namespace)
	}
	if err := a.ownSecret(ctx, ag, metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}); err != nil {
		return err
	}
	pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, ec)
	if _, err := pods.UpdateEphemeralContainers(ctx, pod.Name, pod, metav1.UpdateOptions{}); err != nil {
		return apiError(err, "update", "pods/ephemeralcontainers", t.Pod.Namespace)
	}
	step(o, fmt.Sprintf("agent container %s added to pod %s", ag.Name, pod.Name))
	return a.waitRunning(ctx, t.Pod.Namespace, t.Pod.Name, ag.Name, true)
}

// startJob runs the agent as a Job: on the target's node, entering its
// network namespace, or (t nil) in a pod of its own. It returns once the
// agent's container runs.
func (a *Access) startJob(ctx context.Context, t *Target, ag *Agent, args []string, env []corev1.EnvVar, o AgentOptions) error {
	ns := a.jobNamespace(t, o)
	ag.JobNamespace = ns
	job := agentJob(ns, ag.Name, ag.labels(o), args, env, o)
	if t != nil {
		if err := enterTarget(job, t); err != nil {
			return err
		}
	}
	if o.OnCreate != nil {
		if err := o.OnCreate("job", ns, ag.Name); err != nil {
			return err
		}
	}
	created, err := a.Client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	if err != nil {
		return apiError(err, "create", "jobs", ns)
	}
	if err := a.ownSecret(ctx, ag, metav1.OwnerReference{APIVersion: "batch/v1", Kind: "Job", Name: created.Name, UID: created.UID}); err != nil {
		return err
	}
	step(o, fmt.Sprintf("agent job %s/%s created", ns, ag.Name))
	podName, err := a.jobPod(ctx, ns, ag.Name)
	if err != nil {
		return err
	}
	if t == nil {
		ag.Namespace, ag.Pod = ns, podName
	}
	return a.waitRunning(ctx, ns, podName, "agent", false)
}

// jobNamespace is where the agent's Job goes: agent.namespace, else the
// target's, else the context's.
func (a *Access) jobNamespace(t *Target, o AgentOptions) string {
	switch {
	case o.Namespace != "":
		return o.Namespace
	case t != nil:
		return t.Pod.Namespace
	}
	return a.Namespace
}

// tokenKey is the key of the token in the agent's Secret.
const tokenKey = "token"

// createTokenSecret creates the Secret that holds the run's token for the
// agent, named and labelled as the agent.
func (a *Access) createTokenSecret(ctx context.Context, ag *Agent, o AgentOptions) error {
	labels := ag.labels(o)
	if o.OnCreate != nil {
		if err := o.OnCreate("secret", ag.SecretNamespace, ag.SecretName); err != nil {
			return err
		}
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: ag.SecretName, Namespace: ag.SecretNamespace, Labels: labels, Annotations: ag.annotations()},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{tokenKey: []byte(ag.Token)},
	}
	created, err := a.Client.CoreV1().Secrets(ag.SecretNamespace).Create(ctx, secret, metav1.CreateOptions{})
	if err != nil {
		if ag.Shared && apierrors.IsAlreadyExists(err) {
			if o.OnForget != nil {
				o.OnForget("secret", ag.SecretNamespace, ag.SecretName)
			}
			return errLostRace
		}
		return apiError(err, "create", "secrets", ag.SecretNamespace)
	}
	ag.secretUID = created.UID
	return nil
}

// ownSecret makes owner the owner of the agent's Secret, so that the
// garbage collector removes it with the Job (or the pod) even when the
// run that made it was killed.
func (a *Access) ownSecret(ctx context.Context, ag *Agent, owner metav1.OwnerReference) error {
	secrets := a.Client.CoreV1().Secrets(ag.SecretNamespace)
	s, err := secrets.Get(ctx, ag.SecretName, metav1.GetOptions{})
	if err != nil {
		return apiError(err, "get", "secrets", ag.SecretNamespace)
	}
	s.OwnerReferences = append(s.OwnerReferences, owner)
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return apiError(err, "update", "secrets", ag.SecretNamespace)
	}
	return nil
}

// agentJob is the Job named name that runs the agent with args and env, in
// a pod of its own: never restarted, never retried, tolerating every taint,
// without a service account token.
func agentJob(ns, name string, labels map[string]string, args []string, env []corev1.EnvVar, o AgentOptions) *batchv1.Job {
	ttl := int32(max(o.TTL, 0) / time.Second)
	backoff := int32(0)
	var pullSecrets []corev1.LocalObjectReference
	for _, s := range o.ImagePullSecrets {
		pullSecrets = append(pullSecrets, corev1.LocalObjectReference{Name: s})
	}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: batchv1.JobSpec{
			TTLSecondsAfterFinished: &ttl,
			BackoffLimit:            &backoff,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                 corev1.RestartPolicyNever,
					AutomountServiceAccountToken:  new(bool),
					TerminationGracePeriodSeconds: new(int64),
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					ImagePullSecrets:              pullSecrets,
					Containers: []corev1.Container{{
						Name:                     "agent",
						Image:                    o.Image,
						ImagePullPolicy:          pullPolicy(o.Image),
						Args:                     args,
						Env:                      env,
						SecurityContext:          &corev1.SecurityContext{Privileged: &o.Privileged, RunAsUser: new(int64)},
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					}},
				},
			},
		},
	}
}

// enterTarget makes the agent's Job enter the target's network namespace
// from the target's node: it runs there privileged, with the host's PIDs
// and the container runtime's socket, and is told the container's id.
func enterTarget(job *batchv1.Job, t *Target) error {
	if t.ContainerID == "" {
		return fmt.Errorf("container %s of pod %s has no container id yet: is it running?", t.Container, t.Pod.Name)
	}
	socket, _, err := enter.SplitID(t.ContainerID)
	if err != nil {
		return err
	}
	spec := &job.Spec.Template.Spec
	hostPathType := corev1.HostPathSocket
	privileged := true
	spec.NodeName = t.Pod.Spec.NodeName
	spec.HostPID = true
	c := &spec.Containers[0]
	c.Args = append(c.Args, "--enter-container", t.ContainerID)
	c.SecurityContext.Privileged = &privileged
	c.VolumeMounts = []corev1.VolumeMount{{Name: "cri", MountPath: socket}}
	spec.Volumes = []corev1.Volume{{Name: "cri", VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: socket, Type: &hostPathType}}}}
	return nil
}

// jobPod waits for the agent Job's pod to exist and returns its name: the
// pod gets a generated name, so it is found by its label.
func (a *Access) jobPod(ctx context.Context, ns, jobName string) (string, error) {
	for {
		pods, err := a.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "trafficpolice.dev/agent=" + jobName})
		if err != nil {
			return "", apiError(err, "list", "pods", ns)
		}
		if len(pods.Items) > 0 {
			return pods.Items[0].Name, nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return "", fmt.Errorf("agent job %s/%s: no pod yet: %w", ns, jobName, err)
		}
	}
}

// waitRunning waits for a container of the pod to run, and fails early
// with the reason when it cannot (image missing, crashed, refused).
func (a *Access) waitRunning(ctx context.Context, ns, pod, container string, ephemeral bool) error {
	for {
		p, err := a.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("agent in pod %s/%s did not start in time", ns, pod)
			}
			return apiError(err, "get", "pods", ns)
		}
		statuses := p.Status.ContainerStatuses
		if ephemeral {
			statuses = p.Status.EphemeralContainerStatuses
		}
		for _, st := range statuses {
			if st.Name != container {
				continue
			}
			switch {
			case st.State.Running != nil:
				return nil
			case st.State.Terminated != nil:
				term := st.State.Terminated
				return fmt.Errorf("agent in pod %s/%s exited at once (%s, exit code %d): %s", ns, pod, term.Reason, term.ExitCode, strings.TrimSpace(term.Message))
			}
			if err := a.waitingError(ctx, p, st, ephemeral); err != nil {
				return err
			}
		}
		if p.Status.Phase == corev1.PodFailed {
			return fmt.Errorf("agent pod %s/%s failed: %s %s", ns, pod, p.Status.Reason, p.Status.Message)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("agent in pod %s/%s did not start in time", ns, pod)
		}
	}
}

// waitingError is why the agent's container, waiting, cannot start (its
// image cannot be pulled, its spec is refused, it crashes); nil while it
// may still start.
func (a *Access) waitingError(ctx context.Context, p *corev1.Pod, st corev1.ContainerStatus, ephemeral bool) error {
	w := st.State.Waiting
	switch {
	case w == nil:
		return nil
	case isPullReason(w.Reason):
		var events []corev1.Event
		if w.Reason == "ImagePullBackOff" {
			events = a.podEvents(ctx, p.Namespace, p.Name)
		}
		return pullError(p, st, ephemeral, events)
	case badWait(w.Reason):
		return fmt.Errorf("agent in pod %s/%s cannot start: %s: %s", p.Namespace, p.Name, w.Reason, w.Message)
	}
	return nil
}

func badWait(reason string) bool {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CreateContainerError",
		"CreateContainerConfigError", "RunContainerError", "CrashLoopBackOff":
		return true
	}
	return false
}

// DeleteAgentObjects removes an agent's object of kind ("secret" or
// "job", with its pods) by name: what a killed run left (see
// AgentOptions.OnCreate). A missing object is not an error. A shared
// agent's object that other runs still use is kept: deleted is false.
func (a *Access) DeleteAgentObjects(ctx context.Context, kind, namespace, name string) (deleted bool, err error) {
	if used, err := a.inUse(ctx, kind, namespace, name); err != nil || used {
		return false, err
	}
	return true, a.deleteAgentObject(ctx, kind, namespace, name)
}

func (a *Access) deleteAgentObject(ctx context.Context, kind, namespace, name string) error {
	zero := int64(0)
	switch kind {
	case "secret":
		err := a.Client.CoreV1().Secrets(namespace).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !isNotFound(err) {
			return apiError(err, "delete", "secrets", namespace)
		}
	case "job":
		bg := metav1.DeletePropagationBackground
		err := a.Client.BatchV1().Jobs(namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg, GracePeriodSeconds: &zero})
		if err != nil && !isNotFound(err) {
			return apiError(err, "delete", "jobs", namespace)
		}
		err = a.Client.CoreV1().Pods(namespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero},
			metav1.ListOptions{LabelSelector: "trafficpolice.dev/agent=" + name})
		if err != nil && !isNotFound(err) {
			return apiError(err, "delete", "pods", namespace)
		}
	default:
		return fmt.Errorf("agent object kind %q is unknown: want secret or job", kind)
	}
	return nil
}

// Close removes what StartAgent created that Kubernetes would not remove
// by itself: the Job (and its pod) at once. An ephemeral container
// cannot be removed; its agent exits by itself once no client is left
// (agent.communication_timeout).
func (ag *Agent) Close(ctx context.Context) error {
	if ag.SecretNamespace != "" {
		// Owned by the Job or the pod too: deleted now all the same, so
		// that the token outlives the run nowhere.
		var pre *metav1.Preconditions
		if ag.secretUID != "" {
			// A shared Secret may have been replaced by another run's
			// since: delete only the one this agent's is.
			pre = &metav1.Preconditions{UID: &ag.secretUID}
		}
		err := ag.access.Client.CoreV1().Secrets(ag.SecretNamespace).Delete(ctx, ag.SecretName, metav1.DeleteOptions{Preconditions: pre})
		if apierrors.IsConflict(err) {
			err = nil
		}
		if err != nil && !isNotFound(err) {
			return apiError(err, "delete", "secrets", ag.SecretNamespace)
		}
	}
	if ag.Ephemeral || ag.JobNamespace == "" {
		return nil
	}
	bg := metav1.DeletePropagationBackground
	zero := int64(0)
	err := ag.access.Client.BatchV1().Jobs(ag.JobNamespace).Delete(ctx, ag.Name, metav1.DeleteOptions{PropagationPolicy: &bg, GracePeriodSeconds: &zero})
	if err != nil && !isNotFound(err) {
		return apiError(err, "delete", "jobs", ag.JobNamespace)
	}
	// Background propagation leaves the pod to the garbage collector;
	// delete it too, so that the agent stops now.
	ag.access.Client.CoreV1().Pods(ag.JobNamespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero},
		metav1.ListOptions{LabelSelector: "trafficpolice.dev/agent=" + ag.Name})
	return nil
}

// String describes the agent for progress lines.
func (ag *Agent) String() string {
	if ag.Ephemeral {
		return fmt.Sprintf("ephemeral container %s in pod %s/%s", ag.Name, ag.Namespace, ag.Pod)
	}
	return fmt.Sprintf("job %s/%s in the network namespace of pod %s/%s", ag.JobNamespace, ag.Name, ag.Namespace, ag.Pod)
}

// pullPolicy never pulls the local default image (no registry has it)
// and pulls others only when missing.
func pullPolicy(image string) corev1.PullPolicy {
	if strings.HasPrefix(image, "localhost/") {
		return corev1.PullNever
	}
	return corev1.PullIfNotPresent
}

func step(o AgentOptions, s string) {
	if o.OnStep != nil {
		o.OnStep(s)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func randomID() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random agent id: %w", err)
	}
	return hex.EncodeToString(b), nil
}
