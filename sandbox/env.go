package sandbox

import (
	"os"
	"strings"

	"github.com/trafficpolice/trafficpolice/agent/client"
)

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
		for _, s := range client.SecretEnv {
			secret = secret || name == s
		}
		if !secret {
			out = append(out, kv)
		}
	}
	return out
}
