package connect

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/kube"
)

// Close ends the tunnel and removes the agent's Job, if it started one.
// An agent that runs share is removed by the last of them only: the run
// asks it to retire, which it agrees to when no other run is connected.
func (r *Run) Close() {
	if r.agent != nil && r.agent.Shared {
		r.closeShared()
		return
	}
	if r.Client != nil {
		r.Client.Close()
	}
	if r.agent != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if r.agent.Close(ctx) == nil {
			r.record.remove()
		}
	}
}

// closeShared leaves a shared agent: removed when this run was its last
// client; else it stays for the others (and exits by itself once the
// last of them is gone, agent.communication_timeout later, its Job then
// removed after agent.ttl).
func (r *Run) closeShared() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	left, why := false, "this run never connected to it"
	if r.Client != nil {
		var err error
		if left, why, err = r.Client.Retire(ctx); err != nil {
			why = err.Error()
		}
		r.Client.Close()
	}
	if !left {
		r.notes.Note("the agent stays for the other runs on pod %s/%s: %s", r.agent.Namespace, r.agent.Pod, why)
		r.record.remove()
		return
	}
	if err := r.agent.Close(ctx); err != nil {
		r.notes.Note("remove the agent: %v", err)
		return
	}
	r.record.remove()
}

// AccessOptions is how a run reaches its cluster: the flags' kubeconfig
// and context over the file's, the target's namespace.
func AccessOptions(o Options) kube.AccessOptions {
	return kube.AccessOptions{
		Kubeconfig: first(o.Kubeconfig, o.Config.Kubeconfig),
		Context:    first(o.Context, o.Config.KubeContext),
		Namespace:  o.Config.Target.Namespace,
	}
}

// startThroughKubernetes finds the target, starts the agent in its
// network namespace and connects to it through an API-server
// port-forward that reconnects when it drops.
func startThroughKubernetes(ctx context.Context, o Options) (run *Run, err error) {
	access, err := kube.Connect(AccessOptions(o))
	if err != nil {
		return nil, err
	}
	if !o.Announced {
		o.Progress.Note("%s", Where(access, o.Config.Target.Path))
	}
	target, err := findTarget(ctx, access, o)
	if err != nil {
		return nil, err
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	rec, err := newClusterRecord(o.StateDir, access.File, access.Context)
	if err != nil {
		return nil, err
	}
	run = &Run{record: rec, notes: o.Progress}
	defer func() {
		if err != nil {
			run.Close()
		}
	}()
	// A shared agent that agreed to leave with its last run refuses new
	// ones: remove it and start (or join) another; more than a few in a
	// row is a loop, not bad luck.
	for attempt := 1; ; attempt++ {
		if run.agent, err = startAgent(ctx, access, target, token, rec, o); err != nil {
			return run, err
		}
		run.Client, err = dialAgent(ctx, access, run.agent, o)
		if !errors.Is(err, client.ErrAgentRetiring) || attempt == 3 {
			break
		}
		o.Progress.Note("the agent on pod %s/%s is leaving with its last run: starting another", run.agent.Namespace, run.agent.Pod)
		// Remove it now (its Secret only if still the one seen, and its
		// Job): the next start finds no agent and starts one.
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = run.agent.Close(cctx)
		cancel()
		if err != nil {
			return run, err
		}
	}
	if err != nil {
		return run, err
	}
	if target != nil && o.Config.Feature.Env.Enabled {
		if run.Env, err = importEnv(ctx, access, target, run.Client, o); err != nil {
			return run, err
		}
	}
	return run, nil
}

// Where is the line that says where a run works: the context, the API
// server, the namespace, the target and the kubeconfig they come from
// (under sudo it is the invoking user's, which root's environment does
// not show).
func Where(access *kube.Access, target string) string {
	return fmt.Sprintf("cluster: context %q at %s, namespace %s, target %s (kubeconfig %s)",
		access.Context, access.REST.Host, access.Namespace, target, access.Source)
}

// findTarget resolves the configuration's target to its pod and container;
// nil for a targetless run.
func findTarget(ctx context.Context, access *kube.Access, o Options) (*kube.Target, error) {
	path := o.Config.Target.Path
	if path == "targetless" {
		return nil, nil
	}
	done := o.Progress.Step("target " + path)
	target, err := access.Resolve(ctx, path, "")
	done(err)
	if err != nil {
		return nil, err
	}
	o.Progress.Note("pod %s/%s, container %s, node %s", target.Pod.Namespace, target.Pod.Name, target.Container, target.Pod.Spec.NodeName)
	return target, nil
}

// startAgent starts the agent next to target, as a Job or an ephemeral
// container, as agent.* in the configuration says.
func startAgent(ctx context.Context, access *kube.Access, target *kube.Target, token string, rec *clusterRecord, o Options) (*kube.Agent, error) {
	cfg := o.Config.Agent
	image := cfg.Image
	if image == "" {
		image = kube.DefaultAgentImage(AgentImageTag(o.Version))
	}
	mode := "job"
	if cfg.Ephemeral {
		mode = "ephemeral container"
	}
	done := o.Progress.Step("agent (" + mode + ")")
	ag, err := access.StartOrJoinAgent(ctx, target, kube.AgentOptions{
		Image:                image,
		ImagePullSecrets:     cfg.ImagePullSecrets,
		Namespace:            cfg.Namespace,
		Ephemeral:            cfg.Ephemeral,
		Privileged:           cfg.Privileged,
		TTL:                  time.Duration(cfg.TTL) * time.Second,
		StartupTimeout:       time.Duration(cfg.StartupTimeout) * time.Second,
		CommunicationTimeout: time.Duration(cfg.CommunicationTimeout) * time.Second,
		Token:                token,
		OnStep:               func(s string) { o.Logger.Info(s) },
		OnCreate:             rec.add,
		OnForget:             rec.forget,
	})
	done(err)
	if err != nil {
		// StartAgent removed what it made, if it could: make sure, and
		// drop the record then (else it stays for CollectStale).
		rec.cleanUp(context.WithoutCancel(ctx), access)
	}
	if err == nil && ag.Joined {
		o.Progress.Note("joined the agent another run started on pod %s/%s (%s): runs on one pod share it", ag.Namespace, ag.Pod, ag.Name)
	}
	return ag, err
}

// dialAgent connects to the agent through a port-forward to its pod,
// retrying while it starts.
func dialAgent(ctx context.Context, access *kube.Access, ag *kube.Agent, o Options) (*client.Client, error) {
	cfg := o.Config.Agent
	pf := access.PortForward(ag.Namespace, ag.Pod, ag.Port)
	done := o.Progress.Step(fmt.Sprintf("connected to the agent through a port-forward to pod %s/%s", ag.Namespace, ag.Pod))
	c, err := dialUntil(ctx, time.Duration(cfg.StartupTimeout)*time.Second, client.Options{
		Token:                ag.Token,
		Logger:               o.Logger,
		CommunicationTimeout: time.Duration(cfg.CommunicationTimeout) * time.Second,
		Dialer:               pf.Dial,
		OnState: func(st client.State, err error) {
			switch st {
			case client.StateReconnecting:
				o.Progress.Note("lost the port-forward to the agent (%v): reconnecting", err)
			case client.StateConnected:
				o.Progress.Note("port-forward to the agent is back")
			}
		},
	})
	done(err)
	if err != nil {
		return nil, fmt.Errorf("connect to the agent (%s): %w", ag, err)
	}
	return c, nil
}

// importEnv is the target's environment as feature.env selects it, as
// KEY=VALUE in name order.
func importEnv(ctx context.Context, access *kube.Access, target *kube.Target, c *client.Client, o Options) ([]string, error) {
	env, err := targetEnv(ctx, access, target, c, o.Config.Feature.Env, o.Progress)
	if err != nil {
		return nil, fmt.Errorf("feature.env: %w", err)
	}
	var out []string
	for _, name := range sortedNames(env) {
		out = append(out, name+"="+env[name])
	}
	o.Progress.Note("imported %d environment variables of container %s", len(out), target.Container)
	return out, nil
}

// dialUntil connects to the agent, retrying while its process is still
// starting to listen, until startup has passed.
func dialUntil(ctx context.Context, startup time.Duration, opts client.Options) (*client.Client, error) {
	deadline := time.Now().Add(startup)
	for {
		c, err := client.Dial(ctx, opts)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, client.ErrTokenRefused) || errors.Is(err, client.ErrAgentRetiring) || ctx.Err() != nil || time.Now().After(deadline) {
			return nil, err
		}
		var rbac *kube.RBACError
		if errors.As(err, &rbac) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// AgentImageTag is a build's version as the agent image's tag, as
// `trafficpolice images build agent` tags it.
func AgentImageTag(version string) string {
	if version == "" || version == "dev" {
		return "dev"
	}
	return version
}

func newToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate the agent's token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func sortedNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
