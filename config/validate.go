package config

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Validate checks the configuration's values and how they fit together. Parse and Load call
// it; call it again after changing a Config by hand (say, after adding --local rules).
// It does not parse outgoing filter entries: the outgoing policy owns that grammar.
func (c *Config) Validate() error {
	v := &validator{}
	v.target(c.Target)
	v.agent(c.Agent)
	nw := c.Feature.Network
	v.filter("feature.network.outgoing.filter", nw.Outgoing.Filter.Local, nw.Outgoing.Filter.Remote)
	v.list("feature.network.outgoing.filter.block", nw.Outgoing.Filter.Block)
	v.filter("feature.network.dns.filter", nw.DNS.Filter.Local, nw.DNS.Filter.Remote)
	v.incoming("feature.network.incoming", nw.Incoming)
	v.env("feature.env", c.Feature.Env)
	if len(v.probs) == 0 {
		return nil
	}
	sortProblems(v.probs)
	return &Error{Problems: v.probs}
}

type validator struct {
	probs []Problem
}

func (v *validator) add(path, format string, args ...any) {
	v.probs = append(v.probs, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

var (
	// Kubernetes object names (DNS-1123 subdomains) and namespaces (DNS-1123 labels).
	objectName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	labelName  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

func (v *validator) target(t Target) {
	const path = "target.path"
	if t.Path == "" || t.Path == "targetless" {
		v.namespace("target.namespace", t.Namespace)
		return
	}
	kinds := quoteList(TargetKinds, "or")
	parts := strings.Split(t.Path, "/")
	kind := parts[0]
	switch {
	case kind == "cronjob":
		v.add(path, "not supported yet by trafficpolice (mirrord runs %s targets only through its operator's copy_target; target one of its pods with \"pod/NAME\")", kind)
		return
	case kind == "rollout":
		v.add(path, "not supported yet by trafficpolice (Argo rollouts are not resolved yet; target one of its pods with \"pod/NAME\" or its replica set with \"replicaset/NAME\")")
		return
	case len(parts) == 1:
		v.add(path, "%q has no kind; valid: \"targetless\" or KIND/NAME[/container/CONTAINER] with KIND one of %s, such as \"pod/%s\"", t.Path, kinds, t.Path)
		return
	case kind != "deploy" && !slices.Contains(TargetKinds, kind):
		msg := fmt.Sprintf("%q has an unknown kind %q; valid kinds: %s (or \"targetless\")", t.Path, kind, kinds)
		if s := suggest(kind, append(slices.Clone(TargetKinds), "cronjob", "rollout")); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		v.add(path, "%s", msg)
		return
	}
	switch {
	case parts[1] == "":
		v.add(path, "%q names no %s; valid: %s/NAME", t.Path, kind, kind)
	case len(parts) == 3 || len(parts) > 4 || (len(parts) == 4 && parts[2] != "container"):
		v.add(path, "%q is not valid; valid: %s/NAME or %s/NAME/container/CONTAINER", t.Path, kind, kind)
	case !objectName.MatchString(parts[1]):
		v.add(path, "%q is not a valid Kubernetes name; valid: lowercase letters, digits, '-' and '.'", parts[1])
	case len(parts) == 4 && !labelName.MatchString(parts[3]):
		v.add(path, "container %q is not a valid name; valid: lowercase letters, digits and '-'", parts[3])
	}
	v.namespace("target.namespace", t.Namespace)
}

func (v *validator) namespace(path, ns string) {
	if ns != "" && !labelName.MatchString(ns) {
		v.add(path, "%q is not a valid namespace; valid: up to 63 lowercase letters, digits and '-'", ns)
	}
}

func (v *validator) agent(a Agent) {
	v.namespace("agent.namespace", a.Namespace)
	if strings.ContainsAny(a.Image, " \t\r\n") {
		v.add("agent.image", "%q is not a valid image name; it holds blanks", a.Image)
	}
	for i, s := range a.ImagePullSecrets {
		if !objectName.MatchString(s) {
			v.add(fmt.Sprintf("agent.image_pull_secrets[%d].name", i), "%q is not a valid Secret name; valid: lowercase letters, digits, '-' and '.', up to 253", s)
		}
	}
	if len(a.ImagePullSecrets) > 0 && a.Ephemeral {
		v.add("agent.image_pull_secrets", "cannot apply to an ephemeral agent, which pulls its image with the target pod's own secrets: add the Secret to the target's workload (imagePullSecrets), or leave agent.ephemeral false")
	}
	v.between("agent.ttl", a.TTL, 0, 65535)
	v.between("agent.communication_timeout", a.CommunicationTimeout, 0, 65535)
	v.between("agent.startup_timeout", a.StartupTimeout, 0, 1<<31-1)
	if a.Address != "" {
		host, port, err := net.SplitHostPort(a.Address)
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			v.add("agent.address", `%q is not valid; valid: HOST:PORT such as "127.0.0.1:7777", "agent.example:7777" or "[::1]:7777"`, a.Address)
		}
	}
	if a.Fingerprint != "" && !validFingerprint(a.Fingerprint) {
		v.add("agent.fingerprint", `%q is not valid; valid: "sha256:" and 43 base64 characters, as "trafficpolice agent fingerprint --tls-key FILE" prints on the agent's host`, a.Fingerprint)
	}
}

func (v *validator) between(path string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(path, "%d is not valid; valid: a whole number from %d to %d", n, lo, hi)
	}
}

// list checks a list of filter entries or names: given lists are not empty and hold no blanks.
func (v *validator) list(path string, l []string) {
	if l != nil && len(l) == 0 {
		v.add(path, "empty list; list at least one entry or remove the key")
	}
	for i, e := range l {
		if strings.TrimSpace(e) == "" {
			v.add(indexPath(path, i), "empty entry")
		}
	}
}

func (v *validator) filter(path string, local, remote []string) {
	if local != nil && remote != nil {
		extra := ""
		if strings.Contains(path, "outgoing") {
			extra = `; ours, "block", may stand beside either`
		}
		v.add(path, `"local" and "remote" cannot be used together: "local" sends what matches local and the rest remote, "remote" the opposite; pick one%s`, extra)
	}
	v.list(joinPath(path, "local"), local)
	v.list(joinPath(path, "remote"), remote)
}

func (v *validator) ports(path string, ps []uint16, emptyMeans string) {
	if ps != nil && len(ps) == 0 && emptyMeans != "" {
		v.add(path, "empty list; remove the key to %s, or list ports", emptyMeans)
	}
	for i, p := range ps {
		if p == 0 {
			v.add(indexPath(path, i), "0 is not a port; valid: 1 to 65535")
		}
	}
}

func (v *validator) incoming(path string, in Incoming) {
	if !slices.Contains(modes, in.Mode) {
		v.add(joinPath(path, "mode"), "%q is not a valid mode; valid: %s", in.Mode, quoteList(modes, "or"))
	}
	v.ports(joinPath(path, "ports"), in.Ports, "take every port the app listens on")
	v.ports(joinPath(path, "ignore_ports"), in.IgnorePorts, "")
	if len(in.Ports) > 0 && len(in.IgnorePorts) > 0 {
		v.add(path, `"ports" and "ignore_ports" cannot be used together; list the ports to take, or the ports to leave alone`)
	}
	for i, pair := range in.PortMapping {
		for j, p := range pair {
			if p == 0 {
				v.add(indexPath(indexPath(joinPath(path, "port_mapping"), i), j), "0 is not a port; valid: 1 to 65535")
			}
		}
		// The app's port can take one pod port only (sandbox run refused this too).
		for _, q := range in.PortMapping[:i] {
			if q[0] == pair[0] && pair[0] != 0 {
				v.add(indexPath(joinPath(path, "port_mapping"), i), "maps local port %d again (first mapped to %d); give each local port one remote port", pair[0], q[1])
				break
			}
		}
	}
	if in.HTTPFilter != nil {
		v.httpFilter(joinPath(path, "http_filter"), *in.HTTPFilter, true)
	}
}

// httpToken is an HTTP method: a token of RFC 9110.
var httpToken = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func (v *validator) httpFilter(path string, f HTTPFilter, top bool) {
	header, pathKey, method := "header_filter", "path_filter", "method_filter"
	if !top {
		header, pathKey, method = "header", "path", "method"
	}
	var set []string
	if f.HeaderFilter != "" {
		set = append(set, header)
	}
	if f.PathFilter != "" {
		set = append(set, pathKey)
	}
	if f.MethodFilter != "" {
		set = append(set, method)
	}
	if f.AllOf != nil {
		set = append(set, "all_of")
	}
	if f.AnyOf != nil {
		set = append(set, "any_of")
	}
	switch {
	case !top && (f.AllOf != nil || f.AnyOf != nil || f.Ports != nil):
		v.add(path, `all_of, any_of and ports cannot be nested; an inner filter sets one of "header", "path" or "method"`)
		return
	case len(set) == 0 && top:
		v.add(path, "sets no filter; set one of header_filter, path_filter, method_filter, all_of or any_of, or remove http_filter")
	case len(set) == 0:
		v.add(path, `sets no filter; set one of "header", "path" or "method"`)
	case len(set) > 1 && top:
		v.add(path, "sets %s together; set one, or combine filters with all_of or any_of", quoteList(set, "and"))
	case len(set) > 1:
		v.add(path, "sets %s together; an inner filter sets one", quoteList(set, "and"))
	}
	v.regex(joinPath(path, header), f.HeaderFilter)
	v.regex(joinPath(path, pathKey), f.PathFilter)
	if f.MethodFilter != "" && !httpToken.MatchString(f.MethodFilter) {
		v.add(joinPath(path, method), "%q is not an HTTP method name such as \"GET\" or \"POST\"", f.MethodFilter)
	}
	for name, list := range map[string][]HTTPFilter{"all_of": f.AllOf, "any_of": f.AnyOf} {
		if list != nil && len(list) == 0 {
			v.add(joinPath(path, name), "empty list; list at least one filter")
		}
		for i, inner := range list {
			v.httpFilter(indexPath(joinPath(path, name), i), inner, false)
		}
	}
	if top {
		v.ports(joinPath(path, "ports"), f.Ports, "filter on every port")
	}
}

func (v *validator) regex(path, expr string) {
	if expr == "" {
		return
	}
	if _, err := regexp.Compile(expr); err != nil {
		for _, look := range []string{"(?=", "(?!", "(?<=", "(?<!"} {
			if strings.Contains(expr, look) {
				v.add(path, "%q uses look-around (%s...), which trafficpolice does not support yet: its regular expressions are Go's (RE2) syntax", expr, look)
				return
			}
		}
		v.add(path, "%q is not a valid regular expression: %s", expr, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
}

func (v *validator) env(path string, e Env) {
	if !e.Enabled && (e.Include != nil || e.Exclude != nil || e.Override != nil) {
		v.add(path, "include, exclude or override is set but env is off; turn env on or drop them")
	}
	if e.Include != nil && e.Exclude != nil {
		v.add(path, `"include" and "exclude" cannot be used together; list the variables to take, or the ones to leave out`)
	}
	v.list(joinPath(path, "include"), e.Include)
	for i, x := range e.Exclude {
		if strings.TrimSpace(x) == "" {
			v.add(indexPath(joinPath(path, "exclude"), i), "empty entry")
		}
	}
	for k := range e.Override {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			v.add(joinPath(joinPath(path, "override"), k), "%q is not a valid environment variable name", k)
		}
	}
}

// validFingerprint is the shape of a key fingerprint: "sha256:" and the
// SHA-256 in base64 (package agent/tunneltls reads it; config depends on
// nothing of ours, hence this check of its own).
func validFingerprint(s string) bool {
	rest, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return false
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(rest, "="))
	return err == nil && len(b) == sha256.Size
}
