package sandbox

import (
	"os"
	"strings"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// secretEnv names the variables that are trafficpolice's own secrets. The
// agent's token opens a tunnel that no rule polices: an app that had it
// could dial the agent itself and reach anything the pod reaches.
var secretEnv = []string{proto.EnvToken}

// appEnv is the environment the app gets: env (nil for this process's)
// without trafficpolice's secrets. It never returns nil, so that nothing
// below falls back to this process's environment unfiltered.
func appEnv(env []string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		secret := false
		for _, s := range secretEnv {
			secret = secret || name == s
		}
		if !secret {
			out = append(out, kv)
		}
	}
	return out
}
