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
func (r *Run) Close() {
	if r.Client != nil {
		r.Client.Close()
	}
	if r.agent != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		r.agent.Close(ctx)
	}
}

// startThroughKubernetes finds the target, starts the agent in its
// network namespace and connects to it through an API-server
// port-forward that reconnects when it drops.
func startThroughKubernetes(ctx context.Context, o Options) (run *Run, err error) {
	cfg, progress, logger := o.Config, o.Progress, o.Logger
	access, err := kube.Connect(kube.AccessOptions{
		Kubeconfig: first(o.Kubeconfig, cfg.Kubeconfig),
		Context:    first(o.Context, cfg.KubeContext),
		Namespace:  cfg.Target.Namespace,
	})
	if err != nil {
		return nil, err
	}
	var target *kube.Target
	if cfg.Target.Path != "targetless" {
		done := progress.Step("target " + cfg.Target.Path)
		target, err = access.Resolve(ctx, cfg.Target.Path, "")
		done(err)
		if err != nil {
			return nil, err
		}
		progress.Note("pod %s/%s, container %s, node %s", target.Pod.Namespace, target.Pod.Name, target.Container, target.Pod.Spec.NodeName)
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	image := cfg.Agent.Image
	if image == "" {
		image = kube.DefaultAgentImage(AgentImageTag(o.Version))
	}
	startup := time.Duration(cfg.Agent.StartupTimeout) * time.Second
	comm := time.Duration(cfg.Agent.CommunicationTimeout) * time.Second
	mode := "job"
	if cfg.Agent.Ephemeral {
		mode = "ephemeral container"
	}
	done := progress.Step("agent started (" + mode + ")")
	ag, err := access.StartAgent(ctx, target, kube.AgentOptions{
		Image:                image,
		Namespace:            cfg.Agent.Namespace,
		Ephemeral:            cfg.Agent.Ephemeral,
		Privileged:           cfg.Agent.Privileged,
		TTL:                  time.Duration(cfg.Agent.TTL) * time.Second,
		StartupTimeout:       startup,
		CommunicationTimeout: comm,
		Token:                token,
		OnStep:               func(s string) { logger.Info(s) },
	})
	done(err)
	if err != nil {
		return nil, err
	}
	run = &Run{agent: ag}
	defer func() {
		if err != nil {
			run.Close()
		}
	}()
	pf := access.PortForward(ag.Namespace, ag.Pod, ag.Port)
	done = progress.Step(fmt.Sprintf("connected to the agent through a port-forward to pod %s/%s", ag.Namespace, ag.Pod))
	run.Client, err = dialUntil(ctx, startup, client.Options{
		Token:                token,
		Logger:               logger,
		CommunicationTimeout: comm,
		Dialer:               pf.Dial,
		OnState: func(st client.State, err error) {
			switch st {
			case client.StateReconnecting:
				progress.Note("lost the port-forward to the agent (%v): reconnecting", err)
			case client.StateConnected:
				progress.Note("port-forward to the agent is back")
			}
		},
	})
	done(err)
	if err != nil {
		return run, fmt.Errorf("connect to the agent (%s): %w", ag, err)
	}
	if target != nil && cfg.Feature.Env.Enabled {
		env, err := targetEnv(ctx, access, target, run.Client, cfg.Feature.Env, progress)
		if err != nil {
			return run, fmt.Errorf("feature.env: %w", err)
		}
		for _, name := range sortedNames(env) {
			run.Env = append(run.Env, name+"="+env[name])
		}
		progress.Note("imported %d environment variables of container %s", len(run.Env), target.Container)
	}
	return run, nil
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
		if errors.Is(err, client.ErrTokenRefused) || ctx.Err() != nil || time.Now().After(deadline) {
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
