package sandbox

import (
	"os"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/config"
)

// The agent's token opens a tunnel around every rule: an app that had it
// could dial the agent itself. It must not reach the app, whether it came
// from trafficpolice's own environment or from the target's.
func TestAppEnvironmentHoldsNoAgentToken(t *testing.T) {
	needRoot(t)
	cleanCheck(t)
	const secret = "tp-secret-token-" + "4f1c"
	env := append(os.Environ(), proto.EnvToken+"="+secret, "TP_KEPT=yes")
	r := run(t, config.Default(), ExtraRules{}, []string{"env"}, func(o *Options) { o.Env = env })
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	contains(t, r.stdout, "TP_KEPT=yes")
	if strings.Contains(r.stdout, secret) || strings.Contains(r.stdout, proto.EnvToken) {
		t.Fatalf("the app's environment holds the agent's token:\n%s", r.stdout)
	}
	// Options.Env nil means trafficpolice's own environment: filtered too.
	t.Setenv(proto.EnvToken, secret)
	r = run(t, config.Default(), ExtraRules{}, []string{"env"}, func(o *Options) { o.Env = nil })
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if strings.Contains(r.stdout, secret) {
		t.Fatalf("with Env nil the app's environment holds the agent's token:\n%s", r.stdout)
	}
}

func TestImageAppEnvironmentHoldsNoAgentToken(t *testing.T) {
	e := newImageEnv(t)
	cleanCheck(t)
	const secret = "tp-secret-token-" + "9e2a"
	r := run(t, nil, ExtraRules{}, []string{"env"}, e.opt, func(o *Options) {
		o.Env = append(os.Environ(), proto.EnvToken+"="+secret)
		o.Container.Env = []string{proto.EnvToken + "=" + secret, "TP_KEPT=yes"}
	})
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	contains(t, r.stdout, "TP_KEPT=yes")
	if strings.Contains(r.stdout, secret) {
		t.Fatalf("the container's environment holds the agent's token:\n%s", r.stdout)
	}
}
