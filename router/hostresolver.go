package router

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// HostResolver resolves like the host does: names in the host's /etc/hosts
// first (A, AAAA and PTR), then the nameservers of its /etc/resolv.conf.
// Both files are re-read when they change.
type HostResolver struct {
	resolvPath, hostsPath string

	mu          sync.Mutex
	hostsMod    time.Time
	hosts       map[string][]netip.Addr // lower-case fqdn → addresses
	reverse     map[netip.Addr][]string
	resolvMod   time.Time
	nameservers []string
}

// NewHostResolver reads the given resolv.conf and hosts files.
func NewHostResolver(resolvConf, hosts string) *HostResolver {
	return &HostResolver{resolvPath: resolvConf, hostsPath: hosts}
}

// Exchange answers one raw query.
func (h *HostResolver) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	q := new(dns.Msg)
	if err := q.Unpack(query); err != nil {
		return nil, fmt.Errorf("host resolver: bad query: %w", err)
	}
	if len(q.Question) == 1 {
		if m := h.fromHosts(q); m != nil {
			return m.Pack()
		}
	}
	servers, err := h.servers()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, s := range servers {
		m, err := exchangeWithFallback(ctx, q, s)
		if err == nil {
			return m.Pack()
		}
		lastErr = err
	}
	return nil, fmt.Errorf("host resolver: no nameserver answered: %w", lastErr)
}

// exchangeWithFallback asks over UDP and retries over TCP when truncated.
func exchangeWithFallback(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", UDPSize: dns.MaxMsgSize, Timeout: 5 * time.Second}
	m, _, err := c.ExchangeContext(ctx, q, server)
	if err == nil && !m.Truncated {
		return m, nil
	}
	c.Net = "tcp"
	m, _, err = c.ExchangeContext(ctx, q, server)
	return m, err
}

func (h *HostResolver) servers() ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st, err := os.Stat(h.resolvPath)
	if err != nil {
		return nil, fmt.Errorf("host resolver: %w", err)
	}
	if st.ModTime().Equal(h.resolvMod) && h.nameservers != nil {
		return h.nameservers, nil
	}
	cfg, err := dns.ClientConfigFromFile(h.resolvPath)
	if err != nil {
		return nil, fmt.Errorf("host resolver: read %s: %w", h.resolvPath, err)
	}
	var out []string
	for _, s := range cfg.Servers {
		out = append(out, net.JoinHostPort(s, cfg.Port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("host resolver: %s lists no nameserver", h.resolvPath)
	}
	h.nameservers, h.resolvMod = out, st.ModTime()
	return out, nil
}

func (h *HostResolver) fromHosts(q *dns.Msg) *dns.Msg {
	h.loadHosts()
	h.mu.Lock()
	defer h.mu.Unlock()
	question := q.Question[0]
	name := strings.ToLower(dns.Fqdn(question.Name))
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	hdr := dns.RR_Header{Name: question.Name, Class: dns.ClassINET, Ttl: 5}
	switch question.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		addrs, ok := h.hosts[name]
		if !ok {
			return nil
		}
		for _, a := range addrs {
			if a.Is4() && question.Qtype == dns.TypeA {
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			}
			if a.Is6() && question.Qtype == dns.TypeAAAA {
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
		// A name in /etc/hosts answers NOERROR with no records for the
		// other family, as glibc does, instead of asking the nameservers.
		return m
	case dns.TypePTR:
		ip, err := reverseToAddr(name)
		if err != nil {
			return nil
		}
		names, ok := h.reverse[ip]
		if !ok {
			return nil
		}
		hdr.Rrtype = dns.TypePTR
		for _, n := range names {
			m.Answer = append(m.Answer, &dns.PTR{Hdr: hdr, Ptr: n})
		}
		return m
	}
	return nil
}

func (h *HostResolver) loadHosts() {
	h.mu.Lock()
	defer h.mu.Unlock()
	st, err := os.Stat(h.hostsPath)
	if err != nil || st.ModTime().Equal(h.hostsMod) && h.hosts != nil {
		return
	}
	f, err := os.Open(h.hostsPath)
	if err != nil {
		return
	}
	defer f.Close()
	hosts := map[string][]netip.Addr{}
	reverse := map[netip.Addr][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil {
			continue
		}
		a = a.Unmap()
		for _, n := range fields[1:] {
			fq := strings.ToLower(dns.Fqdn(n))
			hosts[fq] = append(hosts[fq], a)
			reverse[a] = append(reverse[a], fq)
		}
	}
	h.hosts, h.reverse, h.hostsMod = hosts, reverse, st.ModTime()
}

// reverseToAddr parses an in-addr.arpa / ip6.arpa name.
func reverseToAddr(name string) (netip.Addr, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if v4, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		parts := strings.Split(v4, ".")
		if len(parts) != 4 {
			return netip.Addr{}, fmt.Errorf("bad reverse name")
		}
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
		return netip.ParseAddr(strings.Join(parts, "."))
	}
	if v6, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		nibbles := strings.Split(v6, ".")
		if len(nibbles) != 32 {
			return netip.Addr{}, fmt.Errorf("bad reverse name")
		}
		var b strings.Builder
		for i := len(nibbles) - 1; i >= 0; i-- {
			b.WriteString(nibbles[i])
			if i%4 == 0 && i > 0 {
				b.WriteByte(':')
			}
		}
		return netip.ParseAddr(b.String())
	}
	return netip.Addr{}, fmt.Errorf("not a reverse name")
}
