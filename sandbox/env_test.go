package sandbox

import (
	"os"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// The agent's token opens a tunnel around every rule: an app that had it
// could dial the agent itself. It must not reach the app, whether it came
// from trafficpolice's own environment or from the target's.
func TestAppEnvironmentHoldsNoAgentToken(t *testing.T) {
	netnstest.RequireRoot(t)
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

// capLine returns the value of one Cap* line of /proc/self/status output.
func capLine(t *testing.T, out, name string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s line in:\n%s", name, out)
	return ""
}

// Run as root without sudo (CI), the app cannot change its network: no
// CAP_NET_ADMIN, no way out of the namespace; --cap-add gives it back.
func TestRootAppCannotChangeTheSandboxNetwork(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	script := "ip addr add 10.255.0.1/32 dev lo && echo changed; unshare --net true && echo left; nsenter --net=/proc/1/ns/net true && echo entered; exit 0"
	r := run(t, config.Default(), ExtraRules{}, []string{"sh", "-c", script})
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	for _, word := range []string{"changed", "left", "entered"} {
		if strings.Contains(r.stdout, word) {
			t.Errorf("the app %s its network as root:\n%s", word, r.stdout)
		}
	}
	r = run(t, config.Default(), ExtraRules{}, []string{"sh", "-c", "ip addr add 10.255.0.1/32 dev lo && echo changed"},
		func(o *Options) { o.CapAdd = []string{"NET_ADMIN"} })
	if r.code != 0 || !strings.Contains(r.stdout, "changed") {
		t.Errorf("with CapAdd NET_ADMIN the app could not add an address: %+v", r)
	}
	if r := run(t, nil, ExtraRules{}, []string{"true"}, func(o *Options) { o.CapAdd = []string{"NET_ADMINS"} }); r.err == nil ||
		!strings.Contains(r.err.Error(), `"NET_ADMINS"`) {
		t.Errorf("CapAdd NET_ADMINS: %v, want an error naming it", r.err)
	}
}

func TestImageAppKeepsDockersDefaultCapabilities(t *testing.T) {
	e := newImageEnv(t)
	cleanCheck(t)
	r := run(t, nil, ExtraRules{}, []string{"grep", "^Cap", "/proc/self/status"}, e.opt)
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if got := capLine(t, r.stdout, "CapBnd"); got != "00000000a80425fb" {
		t.Errorf("CapBnd = %s, want Docker's default 00000000a80425fb", got)
	}
	r = run(t, nil, ExtraRules{}, []string{"grep", "^Cap", "/proc/self/status"}, e.opt, func(o *Options) { o.CapAdd = []string{"net_admin"} })
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if got := capLine(t, r.stdout, "CapEff"); got != "00000000a80435fb" {
		t.Errorf("with CapAdd net_admin: CapEff = %s, want 00000000a80435fb", got)
	}
}
