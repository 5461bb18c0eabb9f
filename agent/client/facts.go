package client

import (
	"regexp"
	"strings"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// SecretEnv names the environment variables that hold the tunnel's
// secrets. The agent's token opens a tunnel that no rule polices: an app
// that had it could dial the agent itself and reach anything the pod
// reaches, so they never reach the app.
var SecretEnv = []string{proto.EnvToken}

// Facts describe the pod the agent runs in, as the sandbox copies them
// (the one type of pod facts, as the tunnel carries them).
type Facts = proto.Facts

// Bounds on what the agent may report; glibc's resolver takes at most six
// search domains (256 characters) in older versions, and names are DNS
// names. The agent is a peer: what it says goes into the sandbox's
// resolv.conf and hosts only once it is known to be harmless there.
const (
	maxSearchDomains = 32
	maxOptions       = 16
	maxAddresses     = 64
)

var (
	// dnsName is a hostname or domain: letters, digits, '-', '_' in labels
	// of 1–63 characters, dot-separated, an optional final dot.
	dnsName = regexp.MustCompile(`^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$`)
	// resolvOption is a resolv.conf option: "name" or "name:number".
	resolvOption = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}(:[0-9]{1,5})?$`)
)

// validName reports whether s is a DNS name that can be written into
// resolv.conf or hosts as it is.
func validName(s string) bool { return len(s) <= 253 && dnsName.MatchString(s) }

// sanitizeFacts keeps what the agent reported that is safe to write into
// the sandbox's resolver files, and says what it dropped: a hostname or
// search domain with white space or a newline would add lines of the
// agent's choosing (another nameserver) to them.
func sanitizeFacts(f Facts) (Facts, []string) {
	// IncomingError is shown, never written to a file: it passes as is.
	out := Facts{IncomingError: f.IncomingError}
	var dropped []string
	if f.Hostname != "" {
		if validName(f.Hostname) {
			out.Hostname = f.Hostname
		} else {
			dropped = append(dropped, "hostname "+quote(f.Hostname))
		}
	}
	for _, a := range f.Addresses {
		switch {
		case len(out.Addresses) >= maxAddresses:
			dropped = append(dropped, "address "+a.String()+" (too many)")
		case !a.IsValid() || a.IsUnspecified() || a.IsMulticast():
			dropped = append(dropped, "address "+a.String())
		default:
			out.Addresses = append(out.Addresses, a.Unmap())
		}
	}
	for _, d := range f.SearchDomains {
		switch {
		case len(out.SearchDomains) >= maxSearchDomains:
			dropped = append(dropped, "search domain "+quote(d)+" (too many)")
		case !validName(d):
			dropped = append(dropped, "search domain "+quote(d))
		default:
			out.SearchDomains = append(out.SearchDomains, d)
		}
	}
	if f.Ndots >= 0 && f.Ndots <= 15 { // resolv.conf caps ndots at 15
		out.Ndots = f.Ndots
	} else {
		dropped = append(dropped, "ndots outside 0-15")
	}
	for _, o := range f.Options {
		switch {
		case len(out.Options) >= maxOptions:
			dropped = append(dropped, "option "+quote(o)+" (too many)")
		case !resolvOption.MatchString(o):
			dropped = append(dropped, "option "+quote(o))
		default:
			out.Options = append(out.Options, o)
		}
	}
	return out, dropped
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ReplaceAll(strings.ReplaceAll(`"`+s+`"`, "\n", `\n`), "\r", `\r`)
}
