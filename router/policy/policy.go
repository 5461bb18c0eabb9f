package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
)

// Route is where a flow goes.
type Route uint8

const (
	// Remote: through the agent, from the target pod's network namespace.
	Remote Route = iota
	// Local: from the host, as if the app ran there.
	Local
	// Block: refused at once.
	Block
	// Sandbox: stays inside the sandbox (the app talking to its own port).
	Sandbox
)

func (r Route) String() string {
	switch r {
	case Local:
		return "local"
	case Block:
		return "block"
	case Sandbox:
		return "sandbox"
	}
	return "remote"
}

// Rules is the policy's input, straight from the configuration. A nil list
// is absent; a non-nil empty list is an error, as in mirrord.
type Rules struct {
	Local, Remote, Block []string
	// TCP and UDP say whether outgoing traffic of that protocol is
	// intercepted at all; when false it all goes local (mirrord's
	// "outgoing": false, "tcp": false).
	TCP, UDP bool
	// IgnoreLocalhost sends loopback flows to the host's loopback.
	IgnoreLocalhost bool

	// DNS: Enabled false resolves every name locally; DNSLocal/DNSRemote
	// are the dns.filter lists for names no outgoing rule names.
	DNSEnabled          bool
	DNSLocal, DNSRemote []string

	// HaveRemote says an agent or target is configured. Without one, flows
	// that would go remote by default go local instead (loopback excepted:
	// the host's loopback is never reached by default).
	HaveRemote bool
}

// EntryError is a filter entry that does not parse, with where it came from.
type EntryError struct {
	List  string // "local", "remote", "block", "dns.local", "dns.remote"
	Index int
	Entry string
	Err   error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("%s[%d] %q: %v", e.List, e.Index, e.Entry, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// Policy decides routes. It is safe for concurrent use.
type Policy struct {
	rules                    Rules
	local, remote, block     []Entry
	dnsLocal, dnsRemote      []Entry
	localSet, remoteSet      bool
	dnsLocalSet, dnsRemotSet bool

	// ports are the destination ports UniformRoute tries (portsThatDiffer).
	ports []uint16

	mu            sync.RWMutex
	searchDomains []string
}

// New parses and checks the rules.
func New(r Rules) (*Policy, error) {
	p := &Policy{rules: r}
	if r.Local != nil && r.Remote != nil {
		return nil, fmt.Errorf("outgoing filter: \"local\" and \"remote\" cannot both be set; choose one (\"block\" may stand beside either)")
	}
	var err error
	if p.local, p.localSet, err = parseList("local", r.Local); err != nil {
		return nil, err
	}
	if p.remote, p.remoteSet, err = parseList("remote", r.Remote); err != nil {
		return nil, err
	}
	if p.block, _, err = parseList("block", r.Block); err != nil {
		return nil, err
	}
	if r.DNSLocal != nil && r.DNSRemote != nil {
		return nil, fmt.Errorf("dns filter: \"local\" and \"remote\" cannot both be set; choose one")
	}
	if p.dnsLocal, p.dnsLocalSet, err = parseList("dns.local", r.DNSLocal); err != nil {
		return nil, err
	}
	if p.dnsRemote, p.dnsRemotSet, err = parseList("dns.remote", r.DNSRemote); err != nil {
		return nil, err
	}
	p.ports = portsThatDiffer(p.block, p.local, p.remote)
	return p, nil
}

// portsThatDiffer is every port an entry names and one it does not, which
// stands for all the others: they decide alike (UniformRoute).
func portsThatDiffer(lists ...[]Entry) []uint16 {
	named := map[uint16]bool{}
	var out []uint16
	for _, list := range lists {
		for _, e := range list {
			if e.Port != 0 && !named[e.Port] {
				named[e.Port] = true
				out = append(out, e.Port)
			}
		}
	}
	other := uint16(1)
	for named[other] {
		other++
	}
	return append(out, other)
}

func parseList(name string, raw []string) ([]Entry, bool, error) {
	if raw == nil {
		return nil, false, nil
	}
	if len(raw) == 0 {
		return nil, false, fmt.Errorf("%s: the list is empty; remove it or add entries", name)
	}
	out := make([]Entry, 0, len(raw))
	for i, s := range raw {
		e, err := ParseEntry(s)
		if err != nil {
			return nil, false, &EntryError{List: name, Index: i, Entry: s, Err: err}
		}
		out = append(out, e)
	}
	return out, true, nil
}

// SetSearchDomains tells the policy the sandbox's resolv.conf search list, so
// that a rule "app-db" also matches the query "app-db.default.svc.cluster.local"
// that a resolver makes from it.
func (p *Policy) SetSearchDomains(domains []string) {
	norm := make([]string, 0, len(domains))
	for _, d := range domains {
		if d = normalizeName(d); d != "" {
			norm = append(norm, d)
		}
	}
	p.mu.Lock()
	p.searchDomains = norm
	p.mu.Unlock()
}

// NameSides says where a rule's hostname must be resolved for the rule to
// match the name's addresses.
type NameSides struct {
	// Local: by the host's resolver; Remote: by the cluster's DNS.
	Local, Remote bool
}

// RuleNames lists the hostnames that outgoing rules name, with the sides
// each must be resolved on so that the rule matches a flow by address
// (Flow.Names): a local rule's name on the host, a remote rule's in the
// cluster, and a block rule's on both, since the app may reach a blocked
// host by either route and the block must hold for every address the name
// may stand for. "localhost" is left out: loopback is matched as such.
func (p *Policy) RuleNames() map[string]NameSides {
	out := map[string]NameSides{}
	add := func(list []Entry, s NameSides) {
		for _, e := range list {
			if e.Host == "" || e.Host == "localhost" {
				continue
			}
			cur := out[e.Host]
			out[e.Host] = NameSides{Local: cur.Local || s.Local, Remote: cur.Remote || s.Remote}
		}
	}
	add(p.local, NameSides{Local: true})
	add(p.remote, NameSides{Remote: true})
	add(p.block, NameSides{Local: true, Remote: true})
	return out
}

// Flow is what the policy knows about a new flow.
type Flow struct {
	Proto Proto
	// Dst is the destination as the app addressed it (loopback already
	// mapped back from the sandbox's alias).
	Dst netip.AddrPort
	// Host is the name the sandbox's DNS server last answered with Dst's
	// address, if any.
	Host string
	// Names are all the names Dst's address stands for: names the sandbox's
	// DNS answered with it (and their CNAME chains) and rule names that
	// resolve to it (RuleNames). A hostname rule matches when any of them is
	// its name, however the app got the address.
	Names []string
	// AppListens says the app itself listens on Dst's port inside the sandbox.
	AppListens bool
}

// Decision is a route and the reason for it.
type Decision struct {
	Route Route
	// Rule is the filter entry that decided, as written, or a short reason
	// ("default", "ignore_localhost", ...).
	Rule string
	// Name is, for DNS decisions, the name to resolve on the chosen side
	// (a search-domain expansion of a rule's name is resolved as the bare
	// name on the local side).
	Name string
}

func (d Decision) String() string { return d.Route.String() + " (" + d.Rule + ")" }

// Loopback returns the loopback address that a destination a stands for,
// and whether it is one: the whole of 127.0.0.0/8 and ::1, and the
// unspecified addresses, which the kernel connects to the local host
// (0.0.0.0 to 127.0.0.1, :: to ::1). IPv4-mapped addresses count as IPv4.
func Loopback(a netip.Addr) (netip.Addr, bool) {
	a = a.Unmap()
	switch {
	case a.IsLoopback():
		return a, true
	case a == netip.IPv4Unspecified():
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), true
	case a == netip.IPv6Unspecified():
		return netip.IPv6Loopback(), true
	}
	return a, false
}

// Decide routes one flow.
func (p *Policy) Decide(f Flow) Decision {
	// Rules see an unspecified destination as the loopback it stands for.
	dst, loop := Loopback(f.Dst.Addr())
	if loop && f.AppListens {
		return Decision{Route: Sandbox, Rule: fmt.Sprintf("the app listens on port %d", f.Dst.Port())}
	}
	if e, ok := p.match(p.block, f, dst); ok {
		return Decision{Route: Block, Rule: "block " + e.Raw}
	}
	if f.Proto == TCP && !p.rules.TCP {
		return Decision{Route: Local, Rule: "outgoing.tcp is false"}
	}
	if f.Proto == UDP && !p.rules.UDP {
		return Decision{Route: Local, Rule: "outgoing.udp is false"}
	}
	if loop && p.rules.IgnoreLocalhost {
		return Decision{Route: Local, Rule: "ignore_localhost"}
	}
	switch {
	case p.localSet:
		if e, ok := p.match(p.local, f, dst); ok {
			return Decision{Route: Local, Rule: "local " + e.Raw}
		}
		return p.byDefault(loop, "default: not in the local filter")
	case p.remoteSet:
		if e, ok := p.match(p.remote, f, dst); ok {
			return Decision{Route: Remote, Rule: "remote " + e.Raw}
		}
		return Decision{Route: Local, Rule: "default: not in the remote filter"}
	}
	return p.byDefault(loop, "default")
}

// byDefault is the remote default, which without an agent becomes local for
// everything but loopback.
func (p *Policy) byDefault(loop bool, why string) Decision {
	if !p.rules.HaveRemote && !loop {
		return Decision{Route: Local, Rule: why + " (no agent or target: local)"}
	}
	return Decision{Route: Remote, Rule: why}
}

func (p *Policy) match(list []Entry, f Flow, dst netip.Addr) (Entry, bool) {
	for _, e := range list {
		if p.entryMatches(e, f, dst) {
			return e, true
		}
	}
	return Entry{}, false
}

func (p *Policy) entryMatches(e Entry, f Flow, dst netip.Addr) bool {
	if e.Proto != AnyProto && f.Proto != AnyProto && e.Proto != f.Proto {
		return false
	}
	if f.Proto == ICMP && e.Port != 0 {
		return false // ICMP has no ports
	}
	if e.Port != 0 && e.Port != f.Dst.Port() {
		return false
	}
	switch {
	case e.AnyAddress():
		return true
	case e.Prefix.IsValid():
		return e.Prefix.Contains(dst)
	}
	if _, loop := Loopback(dst); loop && e.Host == "localhost" {
		return true
	}
	if f.Host != "" && p.nameMatches(e.Host, f.Host) {
		return true
	}
	for _, n := range f.Names {
		if p.nameMatches(e.Host, n) {
			return true
		}
	}
	return false
}

// nameMatches reports whether the queried name is the rule's name or one of
// its search-domain expansions; it returns the bare name too.
func (p *Policy) nameMatches(rule, name string) bool {
	_, ok := p.expansionBase(rule, normalizeName(name))
	return ok
}

func (p *Policy) expansionBase(rule, name string) (string, bool) {
	if name == rule {
		return rule, true
	}
	if !strings.HasPrefix(name, rule+".") {
		return "", false
	}
	suffix := name[len(rule)+1:]
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, d := range p.searchDomains {
		if suffix == d {
			return rule, true
		}
	}
	return "", false
}

// ResolveSide decides which side resolves a DNS name: the host (Local) or the
// cluster (Remote). Block is never returned: a blocked name still resolves,
// and the flow to it is refused, which tells the app (and the flow log) why.
func (p *Policy) ResolveSide(name string) Decision {
	n := normalizeName(name)
	for _, list := range []struct {
		entries []Entry
		route   Route
		label   string
	}{{p.local, Local, "local "}, {p.remote, Remote, "remote "}} {
		for _, e := range list.entries {
			if e.Host == "" {
				continue
			}
			if base, ok := p.expansionBase(e.Host, n); ok {
				if list.route == Local {
					return Decision{Route: Local, Rule: list.label + e.Raw, Name: base}
				}
				return Decision{Route: Remote, Rule: list.label + e.Raw, Name: n}
			}
		}
	}
	if !p.rules.DNSEnabled {
		return Decision{Route: Local, Rule: "dns is false", Name: n}
	}
	switch {
	case p.dnsLocalSet:
		if e, base, ok := p.dnsMatch(p.dnsLocal, n); ok {
			return Decision{Route: Local, Rule: "dns local " + e.Raw, Name: base}
		}
		return p.dnsDefault(n, "default: not in the dns local filter")
	case p.dnsRemotSet:
		if e, _, ok := p.dnsMatch(p.dnsRemote, n); ok {
			return Decision{Route: Remote, Rule: "dns remote " + e.Raw, Name: n}
		}
		return Decision{Route: Local, Rule: "default: not in the dns remote filter", Name: n}
	}
	return p.dnsDefault(n, "default")
}

func (p *Policy) dnsDefault(n, why string) Decision {
	if !p.rules.HaveRemote {
		return Decision{Route: Local, Rule: why + " (no agent or target: local)", Name: n}
	}
	return Decision{Route: Remote, Rule: why, Name: n}
}

func (p *Policy) dnsMatch(list []Entry, n string) (Entry, string, bool) {
	for _, e := range list {
		if e.AnyAddress() {
			return e, n, true
		}
		if e.Host == "" {
			continue
		}
		if base, ok := p.expansionBase(e.Host, n); ok {
			return e, base, true
		}
	}
	return Entry{}, "", false
}

// Step is one rule of the policy as the kernel fast path applies it to a
// new IPv4 or IPv6 TCP or UDP flow to a destination that is not loopback:
// the first step that matches decides. Steps that name a host match no
// address by themselves (the kernel does not know names): Steps leaves
// them out, and the fast path must leave every address that has a name to
// the router.
type Step struct {
	// Proto is TCP, UDP or AnyProto.
	Proto Proto
	// Prefix is the destination range; the zero Prefix matches every
	// address.
	Prefix netip.Prefix
	// Port is the destination port; 0 matches every port.
	Port uint16
	// Local says the flow goes local; otherwise the router must see it
	// (remote, blocked).
	Local bool
	// Rule is Decision.Rule for a flow this step decides.
	Rule string
}

// Steps returns the policy, for destinations without names and not
// loopback, as an ordered list whose last step matches every flow. It
// decides every such flow as Decide does.
func (p *Policy) Steps() []Step {
	var out []Step
	add := func(list []Entry, local bool, verb string) {
		for _, e := range list {
			if e.Host != "" || e.Proto == ICMP {
				continue // names: see Step; ICMP never reaches the kernel path
			}
			out = append(out, Step{Proto: e.Proto, Prefix: e.Prefix, Port: e.Port, Local: local, Rule: verb + " " + e.Raw})
		}
	}
	add(p.block, false, "block")
	if !p.rules.TCP {
		out = append(out, Step{Proto: TCP, Local: true, Rule: "outgoing.tcp is false"})
	}
	if !p.rules.UDP {
		out = append(out, Step{Proto: UDP, Local: true, Rule: "outgoing.udp is false"})
	}
	switch {
	case p.localSet:
		add(p.local, true, "local")
		d := p.byDefault(false, "default: not in the local filter")
		out = append(out, Step{Proto: AnyProto, Local: d.Route == Local, Rule: d.Rule})
	case p.remoteSet:
		add(p.remote, false, "remote")
		out = append(out, Step{Proto: AnyProto, Local: true, Rule: "default: not in the remote filter"})
	default:
		d := p.byDefault(false, "default")
		out = append(out, Step{Proto: AnyProto, Local: d.Route == Local, Rule: d.Rule})
	}
	return out
}

// UniformRoute decides the TCP and UDP flows to dst, an address that
// stands for names (Flow.Names), and says whether that decision is the same
// for both protocols and every port. Ports that no rule names all decide
// alike, so one of them stands for the rest. Loopback is never uniform.
func (p *Policy) UniformRoute(dst netip.Addr, names []string) (Decision, bool) {
	if _, loop := Loopback(dst); loop {
		return Decision{}, false
	}
	var first Decision
	n := 0
	for _, port := range p.ports {
		for _, proto := range []Proto{TCP, UDP} {
			d := p.Decide(Flow{Proto: proto, Dst: netip.AddrPortFrom(dst, port), Names: names})
			if n == 0 {
				first = d
			} else if d.Route != first.Route {
				return first, false
			}
			n++
		}
	}
	return first, true
}
