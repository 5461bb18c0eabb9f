package connect

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/kube"
	"github.com/trafficpolice/trafficpolice/config"
)

// processOnlyEnv are variables that describe the container rather than
// the app's configuration: taken from the running process they would
// break the local run (its PATH, its HOME), so they come over only when
// the pod's spec sets them or feature.env.include names them (by name, not
// by a pattern such as "*").
var processOnlyEnv = []string{"PATH", "HOME", "HOSTNAME", "PWD", "OLDPWD", "SHLVL", "TERM", "_"}

// targetEnv is feature.env's environment: the target process's own (the
// image's variables, the spec's and the downward API's, as the app really
// sees them), completed by the spec's where the process lacks a key, then
// filtered by include, exclude and override. Either source may fail when
// the other works (an older agent; no RBAC grant on a Secret): that is a
// note, not an error.
func targetEnv(ctx context.Context, access *kube.Access, target *kube.Target, c *client.Client, envCfg config.Env, progress Progress) (map[string]string, error) {
	proc, perr := c.Env(ctx)
	spec, serr := access.Env(ctx, target)
	switch {
	case perr != nil && serr != nil:
		return nil, fmt.Errorf("read the environment of %s: from its process: %v; from its spec: %w", target, perr, serr)
	case perr != nil:
		var re *client.RemoteError
		if !errors.Is(perr, client.ErrEnvUnsupported) && !errors.As(perr, &re) {
			return nil, fmt.Errorf("read the environment of %s's process: %w", target, perr)
		}
		progress.Note("environment from the pod spec only (the image's own variables are missing): %v", perr)
	case serr != nil:
		progress.Note("environment from the running process only: %v", serr)
	}
	env := mergeEnv(proc, spec, envCfg.Include)
	return kube.FilterEnv(env, envCfg.Include, envCfg.Exclude, envCfg.Override), nil
}

// mergeEnv is proc, without the container-only variables that neither
// spec nor include names, plus spec's keys that proc lacks.
func mergeEnv(proc, spec map[string]string, include []string) map[string]string {
	out := make(map[string]string, len(proc)+len(spec))
	for k, v := range proc {
		if _, inSpec := spec[k]; !inSpec && slices.Contains(processOnlyEnv, k) && !slices.Contains(include, k) {
			continue
		}
		out[k] = v
	}
	for k, v := range spec {
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	return out
}
