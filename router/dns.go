package router

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"github.com/trafficpolice/trafficpolice/router/dnscache"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

const dnsExchangeTimeout = 10 * time.Second

// serveDNS answers the sandbox's DNS over UDP and TCP on addr:53, inside the
// netstack (the sandbox's resolv.conf points there).
func (r *Router) serveDNS(addr netip.Addr) error {
	proto := ipv4.ProtocolNumber
	if addr.Is6() {
		proto = ipv6.ProtocolNumber
	}
	full := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(addr.AsSlice()), Port: 53}
	pc, err := gonet.DialUDP(r.stack, &full, nil, proto)
	if err != nil {
		return fmt.Errorf("router: DNS on %s udp: %w", addr, err)
	}
	ln, err := gonet.ListenTCP(r.stack, full, proto)
	if err != nil {
		pc.Close()
		return fmt.Errorf("router: DNS on %s tcp: %w", addr, err)
	}
	handler := dns.HandlerFunc(r.answerDNS)
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: handler, UDPSize: dns.MaxMsgSize},
		{Listener: ln, Handler: handler},
	} {
		srv := srv
		r.closers = append(r.closers, closerFunc(func() error { return srv.Shutdown() }))
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := srv.ActivateAndServe(); err != nil && r.ctx.Err() == nil {
				r.log.Error("DNS server stopped", "addr", addr, "err", err)
			}
		}()
		<-started
	}
	return nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// answerDNS resolves one query on the side the policy picks, records the
// addresses it hands out, and answers.
func (r *Router) answerDNS(w dns.ResponseWriter, q *dns.Msg) {
	r.stats.dnsQueries.Add(1)
	if len(q.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, dnsExchangeTimeout)
	defer cancel()
	answer, side, err := r.resolve(ctx, q)
	if err != nil {
		r.log.Debug("DNS query failed", "name", q.Question[0].Name, "side", side, "err", err)
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeServerFailure)
		w.WriteMsg(m)
		return
	}
	answer.Id = q.Id
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp || w.RemoteAddr().Network() == "udp" {
		size := dns.MinMsgSize
		if opt := q.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		answer.Truncate(size)
	}
	w.WriteMsg(answer)
}

// resolve answers q from the side the policy decides, rewriting the name
// when the policy resolves a search-domain expansion as its bare name.
func (r *Router) resolve(ctx context.Context, q *dns.Msg) (*dns.Msg, policy.Route, error) {
	qname := q.Question[0].Name
	d := r.cfg.Policy.ResolveSide(qname)
	if d.Route == policy.Remote && r.cfg.Remote == nil {
		d = policy.Decision{Route: policy.Local, Rule: "no agent", Name: d.Name}
	}
	// Only the cluster's answers are kept: the host's resolver is at hand
	// (and has caches of its own), the cluster is a tunnel's round trip
	// away.
	cache := r.dnsCache
	if d.Route != policy.Remote {
		cache = nil
	}
	var key dnscache.Key
	if cache != nil {
		key = dnscache.KeyOf(uint8(d.Route), q)
		if answer := cache.Get(key); answer != nil {
			r.stats.dnsCached.Add(1)
			answer.Question = q.Question // as the app spelled it
			r.remember(qname, d.Route, answer)
			return answer, d.Route, nil
		}
	}
	query := q.Copy()
	query.Id = dns.Id()
	rename := d.Name != "" && !strings.EqualFold(dns.Fqdn(d.Name), qname)
	if rename {
		query.Question[0].Name = dns.Fqdn(d.Name)
	}
	raw, err := query.Pack()
	if err != nil {
		return nil, d.Route, fmt.Errorf("pack query: %w", err)
	}
	var ex Exchanger = r.cfg.LocalResolver
	if d.Route == policy.Remote {
		ex = r.cfg.Remote
	}
	rawAnswer, err := ex.Exchange(ctx, raw)
	if err != nil {
		return nil, d.Route, err
	}
	answer := new(dns.Msg)
	if err := answer.Unpack(rawAnswer); err != nil {
		return nil, d.Route, fmt.Errorf("unpack answer: %w", err)
	}
	// Kept only if it answers the question asked: a resolver that answers
	// another must not fill the cache for this one.
	if !sameQuestion(answer, query) {
		cache = nil
	}
	if rename {
		answer.Question = q.Question
		for _, rr := range answer.Answer {
			if strings.EqualFold(rr.Header().Name, dns.Fqdn(d.Name)) {
				rr.Header().Name = qname
			}
		}
	}
	switch {
	case cache != nil && rename:
		cache.Put(key, answer)
	case cache != nil:
		cache.PutPacked(key, answer, rawAnswer) // as it came: no packing again
	}
	r.remember(qname, d.Route, answer)
	return answer, d.Route, nil
}

// sameQuestion reports whether answer's question is query's (names
// compared without case, as DNS does).
func sameQuestion(answer, query *dns.Msg) bool {
	if len(answer.Question) != 1 || len(query.Question) != 1 {
		return false
	}
	a, q := answer.Question[0], query.Question[0]
	return a.Qtype == q.Qtype && a.Qclass == q.Qclass && strings.EqualFold(a.Name, q.Name)
}

// remember records which names produced which address, for the policy: the
// name the app asked for, and every name of the CNAME chain that led from
// it to the address ("alias CNAME prod-db", "prod-db A 10.0.0.5": both
// alias and prod-db stand for 10.0.0.5).
func (r *Router) remember(qname string, side policy.Route, m *dns.Msg) {
	name := normalizeName(qname)
	aliases := map[string][]string{} // CNAME target → the names pointing at it
	for _, rr := range m.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			target := normalizeName(c.Target)
			aliases[target] = append(aliases[target], normalizeName(c.Hdr.Name))
		}
	}
	for _, rr := range m.Answer {
		a, ok := answerAddr(rr)
		if !ok {
			continue
		}
		ttl := time.Duration(rr.Header().Ttl) * time.Second
		r.names.record(a, name, side, asked, ttl)
		for _, n := range chainTo(normalizeName(rr.Header().Name), aliases) {
			if n != name {
				r.names.record(a, n, side, chained, ttl)
			}
		}
	}
}

// chainTo is name and every name that leads to it through aliases.
func chainTo(name string, aliases map[string][]string) []string {
	out := []string{name}
	seen := map[string]bool{name: true}
	for i := 0; i < len(out); i++ {
		for _, from := range aliases[out[i]] {
			if !seen[from] {
				seen[from] = true
				out = append(out, from)
			}
		}
	}
	return out
}

// answerAddr is the address of an A or AAAA record.
func answerAddr(rr dns.RR) (netip.Addr, bool) {
	var ip net.IP
	switch v := rr.(type) {
	case *dns.A:
		ip = v.A
	case *dns.AAAA:
		ip = v.AAAA
	default:
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

func normalizeName(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// lookupLocal resolves name on the host side (A or AAAA).
func (r *Router) lookupLocal(ctx context.Context, name string, v6 bool) ([]netip.Addr, error) {
	qtype := dns.TypeA
	if v6 {
		qtype = dns.TypeAAAA
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	raw, err := q.Pack()
	if err != nil {
		return nil, err
	}
	rawAnswer, err := r.cfg.LocalResolver.Exchange(ctx, raw)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	if err := m.Unpack(rawAnswer); err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(v.A); ok {
				out = append(out, a.Unmap())
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(v.AAAA); ok {
				out = append(out, a)
			}
		}
	}
	return out, nil
}
