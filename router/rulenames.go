package router

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// A rule naming a host matches every address the name stands for, however
// the app got the address (an IP literal, an alias, a resolver of its own,
// an answer cached past its TTL). The router resolves each rule's names on
// the side the rule sends them to (policy.RuleNames), at start and again
// before the answer's TTL runs out, and records the addresses in the name
// table, where a new flow finds them with one map lookup. All of it runs on
// goroutines of its own, never on the packet path.
const (
	// ruleRefreshFloor and ruleRefreshCeiling bound the time between two
	// resolutions of a name: cluster DNS answers with TTLs of a few
	// seconds, and a name with a day's TTL may still move.
	ruleRefreshFloor   = 10 * time.Second
	ruleRefreshCeiling = 5 * time.Minute
	// ruleRefreshNoAddress is when a name without addresses (NXDOMAIN, no
	// records) is asked again: it has no TTL to go by.
	ruleRefreshNoAddress = time.Minute
	// ruleResolveTimeout bounds one resolution of a name (all its queries,
	// in parallel); Start waits that long at most for the first.
	ruleResolveTimeout = 5 * time.Second
)

// ruleName is one name of a rule, resolved on one side.
type ruleName struct {
	name string
	side policy.Route // Local or Remote
	// last is the last good answer, kept when a resolution fails.
	last     []netip.Addr
	failures int
}

// ruleNames lists the names to resolve, one per name and side. Without an
// agent the cluster's side is the host's, as for the app's own queries.
func (r *Router) ruleNames() []*ruleName {
	var out []*ruleName
	names := r.cfg.Policy.RuleNames()
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		s := names[n]
		if s.Remote && r.cfg.Remote == nil {
			s.Remote, s.Local = false, true
		}
		if s.Local {
			out = append(out, &ruleName{name: n, side: policy.Local})
		}
		if s.Remote {
			out = append(out, &ruleName{name: n, side: policy.Remote})
		}
	}
	return out
}

// startRuleNames resolves every rule name once, waiting for those first
// answers (so the app's first flow already matches by address), then keeps
// each name fresh on a goroutine of its own until the router closes.
func (r *Router) startRuleNames() {
	names := r.ruleNames()
	var first sync.WaitGroup
	for _, rn := range names {
		first.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			wait := r.refreshRuleName(r.ctx, rn)
			first.Done()
			r.keepFresh(rn, wait)
		}()
	}
	first.Wait()
}

func (r *Router) keepFresh(rn *ruleName, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(r.refreshRuleName(r.ctx, rn))
	}
}

// refreshRuleName resolves rn once, records its addresses and returns when
// to resolve it again. When no query is answered, the last good addresses
// keep matching (they are recorded again), the log says so, and the next
// attempt backs off. When only some are (a resolver that refuses the bare
// name, say), what was answered is added to the last good addresses: a
// partial answer never shrinks a rule.
func (r *Router) refreshRuleName(ctx context.Context, rn *ruleName) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, ruleResolveTimeout)
	defer cancel()
	res := r.resolveRuleName(ctx, rn)
	if res.err != nil && r.ctx.Err() != nil {
		return ruleRefreshFloor // the router is closing
	}
	if res.answered == 0 {
		rn.failures++
		r.recordRuleName(rn, rn.last, 0)
		wait := retryAfter(rn.failures)
		r.log.Warn("a rule's host name did not resolve; its rule keeps matching the addresses it had",
			"name", rn.name, "side", rn.side.String(), "addresses", rn.last, "retry_in", wait, "err", res.err)
		return wait
	}
	rn.failures = 0
	addrs := res.addrs
	if res.err != nil {
		addrs = union(addrs, rn.last)
		r.log.Debug("some queries for a rule's host name failed; its last addresses are kept",
			"name", rn.name, "side", rn.side.String(), "err", res.err)
	}
	if !slices.Equal(addrs, rn.last) {
		r.log.Debug("a rule's host name resolved", "name", rn.name, "side", rn.side.String(), "addresses", addrs, "ttl", res.ttl)
	}
	rn.last = addrs
	r.recordRuleName(rn, addrs, res.ttl)
	if len(addrs) == 0 {
		return ruleRefreshNoAddress
	}
	return refreshAfter(res.ttl)
}

// union is a and b merged, sorted, without duplicates.
func union(a, b []netip.Addr) []netip.Addr {
	out := append(slices.Clone(a), b...)
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func (r *Router) recordRuleName(rn *ruleName, addrs []netip.Addr, ttl time.Duration) {
	for _, a := range addrs {
		r.names.record(a, rn.name, rn.side, ruled, ttl)
	}
}

// refreshAfter is when to ask again for an answer valid for ttl: a little
// before it runs out, within the floor and the ceiling.
func refreshAfter(ttl time.Duration) time.Duration {
	margin := max(ttl/10, time.Second)
	return min(max(ttl-margin, ruleRefreshFloor), ruleRefreshCeiling)
}

// retryAfter backs off from the floor to the ceiling over failed attempts.
func retryAfter(failures int) time.Duration {
	wait := ruleRefreshFloor
	for i := 1; i < failures && wait < ruleRefreshCeiling; i++ {
		wait *= 2
	}
	return min(wait, ruleRefreshCeiling)
}

// resolution is one round of queries for a rule's name.
type resolution struct {
	addrs    []netip.Addr  // every address answered, sorted
	ttl      time.Duration // the smallest TTL among the answers' records
	answered int           // queries that got an answer (NXDOMAIN included)
	err      error         // the queries that did not, joined
}

// resolveRuleName asks rn's side for A and AAAA of the name as written and
// of its search-domain forms (the side's search list: what the app's own
// resolver would ask), in parallel. An answer that says the name does not
// exist counts as an answer with no address; a query that gets no answer,
// or a server failure, is an error.
func (r *Router) resolveRuleName(ctx context.Context, rn *ruleName) resolution {
	var ex Exchanger = r.cfg.LocalResolver
	search := r.cfg.HostSearchDomains
	if rn.side == policy.Remote {
		ex, search = r.cfg.Remote, r.cfg.SearchDomains
	}
	qnames := []string{dns.Fqdn(rn.name)}
	for _, d := range search {
		if d = normalizeName(d); d != "" {
			qnames = append(qnames, dns.Fqdn(rn.name+"."+d))
		}
	}
	type answer struct {
		m   *dns.Msg
		err error
	}
	answers := make(chan answer, 2*len(qnames))
	for _, qn := range qnames {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			go func() {
				m, err := exchange(ctx, ex, qn, qt)
				answers <- answer{m, err}
			}()
		}
	}
	var res resolution
	var errs []error
	for range 2 * len(qnames) {
		a := <-answers
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		res.answered++
		for _, rr := range a.m.Answer {
			if t := time.Duration(rr.Header().Ttl) * time.Second; res.ttl == 0 || t < res.ttl {
				res.ttl = t
			}
			// 0.0.0.0 and :: are what DNS sinkholes answer for a name
			// they block, not an address of the host.
			if addr, ok := answerAddr(rr); ok && !addr.IsUnspecified() {
				res.addrs = append(res.addrs, addr)
			}
		}
	}
	res.addrs = union(res.addrs, nil)
	res.err = errors.Join(errs...)
	return res
}

// exchange asks ex one question and returns the answer, which is an error
// unless it is NOERROR or NXDOMAIN.
func exchange(ctx context.Context, ex Exchanger, qname string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(qname, qtype)
	raw, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("%s %s: pack query: %w", qname, dns.TypeToString[qtype], err)
	}
	rawAnswer, err := ex.Exchange(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", qname, dns.TypeToString[qtype], err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(rawAnswer); err != nil {
		return nil, fmt.Errorf("%s %s: unpack answer: %w", qname, dns.TypeToString[qtype], err)
	}
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%s %s: the server answered %s", qname, dns.TypeToString[qtype], dns.RcodeToString[m.Rcode])
	}
	return m, nil
}
