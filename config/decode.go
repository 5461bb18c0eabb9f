package config

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder walks the generic tree onto a Config, collecting problems with their key paths.
type decoder struct {
	probs   []Problem
	ignored []Ignored
}

func (d *decoder) add(path, format string, args ...any) {
	d.probs = append(d.probs, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// ignore records a key that is not honoured, for a warning.
func (d *decoder) ignore(path string, n *node, means string) {
	d.ignored = append(d.ignored, Ignored{Path: path, Value: n.compact(), Means: means})
}

// invalid reports a value of the wrong type or out of range.
func (d *decoder) invalid(path string, n *node, want string) {
	d.add(path, "%s is not valid; valid: %s", n.describe(), want)
}

// members checks an object's keys against fields and returns the supported keys that are set.
// Keys are visited in sorted order so that every format reports problems alike; null means
// "not set", as in mirrord.
func (d *decoder) members(path string, n *node, fields []field) map[string]*node {
	names := make([]string, 0, len(n.obj))
	for k := range n.obj {
		names = append(names, k)
	}
	sort.Strings(names)
	out := map[string]*node{}
	for _, k := range names {
		v, p := n.obj[k], joinPath(path, k)
		i := slices.IndexFunc(fields, func(f field) bool { return f.name == k })
		if i < 0 {
			d.unknown(path, k, fields)
			continue
		}
		if v.kind == kNull {
			continue
		}
		f := fields[i]
		if f.kind == fSupported {
			out[k] = v
			continue
		}
		if !f.value.accepts(v) {
			d.invalid(p, v, f.value.want())
			continue
		}
		switch {
		case f.kind == fIgnored && !f.quiet(v):
			d.ignore(p, v, f.means(v))
		case f.kind == fRefused && !f.quiet(v):
			d.add(p, "not supported yet by trafficpolice (%s)", f.why)
		}
	}
	return out
}

func (d *decoder) unknown(path, key string, fields []field) {
	p := joinPath(path, key)
	if home, ok := homes[key]; ok && home != p {
		d.add(p, "unknown key here; %q belongs at %s", key, home)
		return
	}
	all := make([]string, len(fields))
	var supported []string
	for i, f := range fields {
		all[i] = f.name
		if f.kind == fSupported {
			supported = append(supported, f.name)
		}
	}
	if s := suggest(key, all); s != "" {
		d.add(p, "unknown key; did you mean %q?", s)
		return
	}
	d.add(p, "unknown key; valid keys here: %s", quoteList(supported, "and"))
}

// text checks a string value for mistakes that would otherwise pass unnoticed.
func (d *decoder) text(path, s string) {
	if !utf8.ValidString(s) {
		d.add(path, "%s is not valid UTF-8 text", strconv.Quote(s))
		return
	}
	first, _ := utf8.DecodeRuneInString(s)
	last, _ := utf8.DecodeLastRuneInString(s)
	if utf8.RuneCountInString(s) >= 2 && isTypographicQuote(first) && isTypographicQuote(last) {
		d.add(path, `%s is wrapped in typographic quotes %c %c; use straight quotes "`, strconv.Quote(s), first, last)
	}
	if strings.Contains(s, "{{") && strings.Contains(s, "}}") {
		d.add(path, "mirrord's templates ({{ ... }}) are not supported yet by trafficpolice; write the value literally")
	}
}

func (d *decoder) str(path string, n *node) (string, bool) {
	if n.kind != kString {
		d.invalid(path, n, "a string")
		return "", false
	}
	d.text(path, n.s)
	return n.s, true
}

func (d *decoder) boolean(path string, n *node) (bool, bool) {
	if n.kind != kBool {
		d.invalid(path, n, "true or false")
		return false, false
	}
	return n.b, true
}

// whole reads a whole number from 0 to max.
func (d *decoder) whole(path string, n *node, max uint64, want string) (uint64, bool) {
	if n.kind != kNumber {
		d.invalid(path, n, want)
		return 0, false
	}
	u, err := strconv.ParseUint(n.s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(n.s, 64)
		switch {
		case ferr == nil && f >= 0 && f <= float64(max) && f == math.Trunc(f):
			u = uint64(f) // 60.0 or 6e1: a whole number written as a float
		case ferr == nil && f != math.Trunc(f):
			d.add(path, "%s is not a whole number; valid: %s", n.s, want)
			return 0, false
		default:
			d.invalid(path, n, want)
			return 0, false
		}
	}
	if u > max {
		d.invalid(path, n, want)
		return 0, false
	}
	return u, true
}

func (d *decoder) port(path string, n *node) (uint16, bool) {
	u, ok := d.whole(path, n, math.MaxUint16, "a port number from 1 to 65535")
	return uint16(u), ok
}

// ports reads a port or a list of ports; an empty list gives an empty, non-nil slice.
func (d *decoder) ports(path string, n *node) []uint16 {
	if n.kind == kNumber {
		if p, ok := d.port(path, n); ok {
			return []uint16{p}
		}
		return nil
	}
	if n.kind != kList {
		d.invalid(path, n, "a list of port numbers")
		return nil
	}
	out := make([]uint16, 0, len(n.list))
	for i, e := range n.list {
		if p, ok := d.port(indexPath(path, i), e); ok {
			out = append(out, p)
		}
	}
	return out
}

// stringList reads a string or a list of strings; an empty list gives an empty, non-nil slice.
// filter says the strings are filter entries, to hint at ":8888" for a bare 8888.
func (d *decoder) stringList(path string, n *node, filter bool) []string {
	switch n.kind {
	case kString:
		d.text(path, n.s)
		return []string{n.s}
	case kList:
		out := make([]string, 0, len(n.list))
		for i, e := range n.list {
			p := indexPath(path, i)
			if e.kind != kString {
				if filter && e.kind == kNumber {
					d.add(p, "%s is not valid; valid: a filter entry string; did you mean \":%s\" (any host, port %s)?", e.s, e.s, e.s)
				} else {
					d.invalid(p, e, "a string")
				}
				continue
			}
			d.text(p, e.s)
			out = append(out, e.s)
		}
		return out
	}
	d.invalid(path, n, "a string or a list of strings")
	return nil
}

// decode walks the whole tree onto c.
func (d *decoder) decode(n *node, c *Config) {
	switch n.kind {
	case kNull:
		return // an empty YAML file: all defaults
	case kObject:
	default:
		d.add("", "the configuration is %s; it must be an object of keys such as \"target\" and \"feature\"", n.describe())
		return
	}
	m := d.members("", n, rootFields)
	if v, ok := m["target"]; ok {
		d.target("target", v, &c.Target)
	}
	if v, ok := m["agent"]; ok {
		d.agent("agent", v, &c.Agent)
	}
	if v, ok := m["feature"]; ok {
		d.feature("feature", v, &c.Feature)
	}
	if v, ok := m["kubeconfig"]; ok {
		c.Kubeconfig, _ = d.str("kubeconfig", v)
	}
	if v, ok := m["kube_context"]; ok {
		c.KubeContext, _ = d.str("kube_context", v)
	}
}

const wantTarget = `a target path such as "pod/NAME" or "deployment/NAME/container/C", or an object with "path" and "namespace"`

func (d *decoder) target(path string, n *node, t *Target) {
	switch n.kind {
	case kString:
		t.Path, _ = d.str(path, n)
		return
	case kObject:
	default:
		d.invalid(path, n, wantTarget)
		return
	}
	// mirrord also takes the path's object form in place of the whole target.
	for _, f := range targetStructFields {
		if _, ok := n.obj[f.name]; !ok {
			continue
		}
		if _, ok := n.obj["namespace"]; ok {
			d.add(path, `mixes the path's object form with "namespace"; write {"path": {%q: ...}, "namespace": ...}`, f.name)
			return
		}
		t.Path = d.targetStruct(path, n)
		return
	}
	m := d.members(path, n, targetFields)
	if v, ok := m["path"]; ok {
		p := joinPath(path, "path")
		switch v.kind {
		case kString:
			t.Path, _ = d.str(p, v)
		case kObject:
			t.Path = d.targetStruct(p, v)
		default:
			d.invalid(p, v, `a target path such as "pod/NAME", or an object such as {"pod": "NAME", "container": "C"}`)
		}
	}
	if v, ok := m["namespace"]; ok {
		t.Namespace, _ = d.str(joinPath(path, "namespace"), v)
	}
}

// targetStruct turns mirrord's object form {"deployment": "api", "container": "main"} into
// the path "deployment/api/container/main".
func (d *decoder) targetStruct(path string, n *node) string {
	m := d.members(path, n, targetStructFields)
	var given []string
	var result string
	kinds := make([]string, len(targetKindFields))
	for i, f := range targetKindFields {
		kinds[i] = f.name
		if v, ok := m[f.name]; ok {
			given = append(given, f.name)
			name, _ := d.str(joinPath(path, f.name), v)
			result = strings.ReplaceAll(f.name, "_", "") + "/" + name
		}
	}
	switch len(given) {
	case 0:
		if _, ok := n.obj["labels"]; !ok { // "labels" is refused already
			d.add(path, "names no target; give one of %s", quoteList(kinds, "or"))
		}
		return ""
	case 1:
	default:
		d.add(path, "names more than one target (%s); give one", quoteList(given, "and"))
		return ""
	}
	if v, ok := m["container"]; ok {
		c, _ := d.str(joinPath(path, "container"), v)
		result += "/container/" + c
	}
	return result
}

func (d *decoder) agent(path string, n *node, a *Agent) {
	if n.kind != kObject {
		d.invalid(path, n, "an object")
		return
	}
	m := d.members(path, n, agentFields)
	if v, ok := m["namespace"]; ok {
		a.Namespace, _ = d.str(joinPath(path, "namespace"), v)
	}
	if v, ok := m["image"]; ok {
		a.Image = d.agentImage(joinPath(path, "image"), v)
	}
	if v, ok := m["image_pull_secrets"]; ok {
		a.ImagePullSecrets = d.pullSecrets(joinPath(path, "image_pull_secrets"), v)
	}
	if v, ok := m["ttl"]; ok {
		if u, ok := d.whole(joinPath(path, "ttl"), v, math.MaxUint16, "a number of seconds from 0 to 65535"); ok {
			a.TTL = int(u)
		}
	}
	if v, ok := m["ephemeral"]; ok {
		a.Ephemeral, _ = d.boolean(joinPath(path, "ephemeral"), v)
	}
	if v, ok := m["privileged"]; ok {
		a.Privileged, _ = d.boolean(joinPath(path, "privileged"), v)
	}
	if v, ok := m["startup_timeout"]; ok {
		if u, ok := d.whole(joinPath(path, "startup_timeout"), v, math.MaxInt32, "a number of seconds"); ok {
			a.StartupTimeout = int(u)
		}
	}
	if v, ok := m["communication_timeout"]; ok {
		if u, ok := d.whole(joinPath(path, "communication_timeout"), v, math.MaxUint16, "a number of seconds from 0 to 65535"); ok {
			a.CommunicationTimeout = int(u)
		}
	}
	if v, ok := m["address"]; ok {
		a.Address, _ = d.str(joinPath(path, "address"), v)
	}
	if v, ok := m["fingerprint"]; ok {
		a.Fingerprint, _ = d.str(joinPath(path, "fingerprint"), v)
	}
}

// pullSecrets reads mirrord's [{"name": SECRET}, ...].
func (d *decoder) pullSecrets(path string, n *node) []string {
	const valid = `a list of {"name": SECRET}`
	if n.kind != kList {
		d.invalid(path, n, valid)
		return nil
	}
	var names []string
	for i, e := range n.list {
		ep := fmt.Sprintf("%s[%d]", path, i)
		if e.kind != kObject {
			d.invalid(ep, e, `an object {"name": SECRET}`)
			continue
		}
		m := d.members(ep, e, pullSecretFields)
		v, ok := m["name"]
		if !ok {
			d.add(ep, `needs "name": the Secret's name`)
			continue
		}
		if s, ok := d.str(joinPath(ep, "name"), v); ok {
			names = append(names, s)
		}
	}
	return names
}

// agentImage reads "registry/image:tag" or mirrord's {"registry": ..., "tag": ...}.
func (d *decoder) agentImage(path string, n *node) string {
	switch n.kind {
	case kString:
		s, _ := d.str(path, n)
		return s
	case kObject:
	default:
		d.invalid(path, n, `an image name, or an object with "registry" and "tag"`)
		return ""
	}
	m := d.members(path, n, agentImageFields)
	var registry, tag string
	if v, ok := m["registry"]; ok {
		registry, _ = d.str(joinPath(path, "registry"), v)
	}
	if v, ok := m["tag"]; ok {
		tag, _ = d.str(joinPath(path, "tag"), v)
	}
	if registry == "" {
		d.add(path, `needs "registry": trafficpolice's agent image is not mirrord's, so a tag alone names no image`)
		return ""
	}
	if tag != "" {
		return registry + ":" + tag
	}
	return registry
}

func (d *decoder) feature(path string, n *node, f *Feature) {
	if n.kind != kObject {
		d.invalid(path, n, "an object")
		return
	}
	m := d.members(path, n, featureFields)
	if v, ok := m["network"]; ok {
		d.network(joinPath(path, "network"), v, &f.Network)
	}
	if v, ok := m["env"]; ok {
		d.env(joinPath(path, "env"), v, &f.Env)
	}
}

func (d *decoder) network(path string, n *node, nw *Network) {
	switch n.kind {
	case kBool:
		if !n.b { // mirrord's "network": false turns every network feature off
			nw.Incoming.Mode = ModeOff
			nw.Outgoing.TCP, nw.Outgoing.UDP = false, false
			nw.DNS.Enabled = false
		}
		return
	case kObject:
	default:
		d.invalid(path, n, "true, false or an object")
		return
	}
	m := d.members(path, n, networkFields)
	if v, ok := m["outgoing"]; ok {
		d.outgoing(joinPath(path, "outgoing"), v, &nw.Outgoing)
	}
	if v, ok := m["dns"]; ok {
		d.dns(joinPath(path, "dns"), v, &nw.DNS)
	}
	if v, ok := m["incoming"]; ok {
		d.incoming(joinPath(path, "incoming"), v, &nw.Incoming)
	}
	if v, ok := m["ipv6"]; ok {
		nw.IPv6, _ = d.boolean(joinPath(path, "ipv6"), v)
	}
}

func (d *decoder) outgoing(path string, n *node, o *Outgoing) {
	switch n.kind {
	case kBool:
		o.TCP, o.UDP = n.b, n.b
		return
	case kObject:
	default:
		d.invalid(path, n, "true, false or an object")
		return
	}
	m := d.members(path, n, outgoingFields)
	if v, ok := m["tcp"]; ok {
		o.TCP, _ = d.boolean(joinPath(path, "tcp"), v)
	}
	if v, ok := m["udp"]; ok {
		o.UDP, _ = d.boolean(joinPath(path, "udp"), v)
	}
	if v, ok := m["ignore_localhost"]; ok {
		o.IgnoreLocalhost, _ = d.boolean(joinPath(path, "ignore_localhost"), v)
	}
	if v, ok := m["filter"]; ok {
		p := joinPath(path, "filter")
		if v.kind != kObject {
			d.invalid(p, v, `an object with "local" or "remote" (and, ours, "block")`)
			return
		}
		fm := d.members(p, v, outgoingFilterFields)
		if len(v.obj) == 0 {
			d.add(p, `is empty; give "local" or "remote" (and, ours, "block"), or remove the key`)
		}
		if e, ok := fm["local"]; ok {
			o.Filter.Local = d.stringList(joinPath(p, "local"), e, true)
		}
		if e, ok := fm["remote"]; ok {
			o.Filter.Remote = d.stringList(joinPath(p, "remote"), e, true)
		}
		if e, ok := fm["block"]; ok {
			o.Filter.Block = d.stringList(joinPath(p, "block"), e, true)
		}
	}
}

func (d *decoder) dns(path string, n *node, dns *DNS) {
	switch n.kind {
	case kBool:
		dns.Enabled = n.b
		return
	case kObject:
	default:
		d.invalid(path, n, "true, false or an object")
		return
	}
	m := d.members(path, n, dnsFields)
	if v, ok := m["enabled"]; ok {
		dns.Enabled, _ = d.boolean(joinPath(path, "enabled"), v)
	}
	if v, ok := m["filter"]; ok {
		p := joinPath(path, "filter")
		if v.kind != kObject {
			d.invalid(p, v, `an object with "local" or "remote"`)
			return
		}
		fm := d.members(p, v, dnsFilterFields)
		if len(v.obj) == 0 {
			d.add(p, `is empty; give "local" or "remote", or remove the key`)
		}
		if e, ok := fm["local"]; ok {
			dns.Filter.Local = d.stringList(joinPath(p, "local"), e, true)
		}
		if e, ok := fm["remote"]; ok {
			dns.Filter.Remote = d.stringList(joinPath(p, "remote"), e, true)
		}
	}
}

var modes = []string{ModeOff, ModeMirror, ModeSteal}

// mode reads an incoming mode; shorthand is set for "incoming": "steal", where an object
// would also do.
func (d *decoder) mode(path string, n *node, shorthand bool) (string, bool) {
	want := quoteList(modes, "or")
	if shorthand {
		want = `"off", "mirror", "steal" or an object`
	}
	if n.kind == kString && slices.Contains(modes, n.s) {
		return n.s, true
	}
	msg := fmt.Sprintf("%s is not a valid mode; valid: %s", n.describe(), want)
	if n.kind == kString {
		if s := suggest(n.s, modes); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
	}
	d.add(path, "%s", msg)
	return "", false
}

func (d *decoder) incoming(path string, n *node, in *Incoming) {
	switch n.kind {
	case kBool:
		in.Mode = ModeMirror // mirrord's "incoming": true is its default, mirror
		if !n.b {
			in.Mode = ModeOff
		}
		return
	case kString:
		if m, ok := d.mode(path, n, true); ok {
			in.Mode = m
		}
		return
	case kObject:
	default:
		d.mode(path, n, true)
		return
	}
	m := d.members(path, n, incomingFields)
	if v, ok := m["mode"]; ok {
		if mode, ok := d.mode(joinPath(path, "mode"), v, false); ok {
			in.Mode = mode
		}
	}
	if v, ok := m["ports"]; ok {
		in.Ports = d.ports(joinPath(path, "ports"), v)
	}
	if v, ok := m["ignore_ports"]; ok {
		if ps := d.ports(joinPath(path, "ignore_ports"), v); len(ps) > 0 {
			in.IgnorePorts = ps
		}
	}
	if v, ok := m["port_mapping"]; ok {
		in.PortMapping = d.portMapping(joinPath(path, "port_mapping"), v)
	}
	if v, ok := m["ignore_localhost"]; ok {
		p := joinPath(path, "ignore_localhost")
		in.IgnoreLocalhost, _ = d.boolean(p, v)
		if in.IgnoreLocalhost {
			d.ignore(p, v, "ports the app listens on only on loopback are stolen or mirrored too")
		}
	}
	if v, ok := m["http_filter"]; ok {
		in.HTTPFilter = d.httpFilter(joinPath(path, "http_filter"), v)
	}
}

const wantPair = "a pair [local, remote] such as [9333, 80]"

func (d *decoder) portMapping(path string, n *node) [][2]uint16 {
	if n.kind != kList {
		d.invalid(path, n, "a list of "+wantPair[2:])
		return nil
	}
	var out [][2]uint16
	for i, e := range n.list {
		p := indexPath(path, i)
		if e.kind != kList || len(e.list) != 2 {
			desc := e.describe()
			if e.kind == kList {
				desc = fmt.Sprintf("a list of %d values", len(e.list))
			}
			d.add(p, "%s is not valid; valid: %s", desc, wantPair)
			continue
		}
		local, ok1 := d.port(indexPath(p, 0), e.list[0])
		remote, ok2 := d.port(indexPath(p, 1), e.list[1])
		if ok1 && ok2 {
			out = append(out, [2]uint16{local, remote})
		}
	}
	return out
}

// httpFilter reads mirrord's http_filter; false, true (no filter given) and an object without
// any filter or ports give nil.
func (d *decoder) httpFilter(path string, n *node) *HTTPFilter {
	switch n.kind {
	case kBool:
		return nil
	case kObject:
	default:
		d.invalid(path, n, "an object such as {\"header_filter\": \"^x-user: alice$\"}")
		return nil
	}
	m := d.members(path, n, httpFilterFields)
	f := &HTTPFilter{}
	if v, ok := m["header_filter"]; ok {
		f.HeaderFilter, _ = d.str(joinPath(path, "header_filter"), v)
	}
	if v, ok := m["path_filter"]; ok {
		f.PathFilter, _ = d.str(joinPath(path, "path_filter"), v)
	}
	if v, ok := m["method_filter"]; ok {
		f.MethodFilter, _ = d.str(joinPath(path, "method_filter"), v)
	}
	if v, ok := m["all_of"]; ok {
		f.AllOf = d.innerFilters(joinPath(path, "all_of"), v)
	}
	if v, ok := m["any_of"]; ok {
		f.AnyOf = d.innerFilters(joinPath(path, "any_of"), v)
	}
	if v, ok := m["ports"]; ok {
		f.Ports = d.ports(joinPath(path, "ports"), v)
	}
	if f.HeaderFilter == "" && f.PathFilter == "" && f.MethodFilter == "" && f.AllOf == nil && f.AnyOf == nil && f.Ports == nil {
		return nil
	}
	return f
}

func (d *decoder) innerFilters(path string, n *node) []HTTPFilter {
	const want = `a list of filters such as [{"header": "^x-user: alice$"}, {"path": "^/api"}]`
	if n.kind != kList {
		d.invalid(path, n, want)
		return nil
	}
	out := make([]HTTPFilter, 0, len(n.list))
	for i, e := range n.list {
		p := indexPath(path, i)
		if e.kind != kObject {
			d.invalid(p, e, `an object with one of "header", "path" or "method"`)
			continue
		}
		m := d.members(p, e, innerFilterFields)
		var f HTTPFilter
		if v, ok := m["header"]; ok {
			f.HeaderFilter, _ = d.str(joinPath(p, "header"), v)
		}
		if v, ok := m["path"]; ok {
			f.PathFilter, _ = d.str(joinPath(p, "path"), v)
		}
		if v, ok := m["method"]; ok {
			f.MethodFilter, _ = d.str(joinPath(p, "method"), v)
		}
		out = append(out, f)
	}
	return out
}

func (d *decoder) env(path string, n *node, e *Env) {
	switch n.kind {
	case kBool:
		e.Enabled = n.b
		return
	case kObject:
	default:
		d.invalid(path, n, "true, false or an object")
		return
	}
	e.Enabled = true
	m := d.members(path, n, envFields)
	if v, ok := m["include"]; ok {
		e.Include = d.envNames(joinPath(path, "include"), v)
	}
	if v, ok := m["exclude"]; ok {
		// Excluding nothing is not excluding: keep nil so the effective config round-trips.
		if ex := d.envNames(joinPath(path, "exclude"), v); len(ex) > 0 {
			e.Exclude = ex
		}
	}
	if v, ok := m["override"]; ok {
		p := joinPath(path, "override")
		if v.kind != kObject {
			d.invalid(p, v, `an object of variable names and values such as {"LOG_LEVEL": "debug"}`)
			return
		}
		names := make([]string, 0, len(v.obj))
		for k := range v.obj {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if s, ok := d.str(joinPath(p, k), v.obj[k]); ok {
				if e.Override == nil {
					e.Override = map[string]string{}
				}
				e.Override[k] = s
			}
		}
	}
}

// envNames reads mirrord's "A;B*" or a list of names.
func (d *decoder) envNames(path string, n *node) []string {
	if n.kind != kString {
		return d.stringList(path, n, false)
	}
	d.text(path, n.s)
	out := []string{}
	for _, s := range strings.Split(n.s, ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
