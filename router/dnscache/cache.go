// Package dnscache keeps DNS answers for as long as their TTL allows, so
// that a name the app asks again and again (Go, for one, caches nothing)
// costs one trip through the tunnel per TTL instead of one per lookup, as
// the cluster's own caching resolvers would.
//
// What it keeps follows RFC 2308 and what CoreDNS's cache does: a positive
// answer for the smallest TTL among its records, a negative one (NXDOMAIN,
// or no record of the type asked) for its SOA's negative TTL, nothing
// without a TTL to go by (a TTL of 0, a negative answer without a SOA, a
// server failure, a truncated answer). TTLs are capped, answers are kept
// packed and bounded in size, and the number of entries is bounded, so a
// peer's answers cannot grow it past a known size. An answer served from
// the cache carries TTLs reduced by the time it spent there.
package dnscache

import (
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
)

const (
	// MaxEntries bounds the cache: with MaxAnswerSize, its answers take at
	// most 16 MiB.
	MaxEntries = 4096
	// MaxAnswerSize is the largest answer kept (packed); larger ones,
	// rare, are asked for every time.
	MaxAnswerSize = 4096
	// MaxTTL caps how long a positive answer is kept, whatever it says.
	MaxTTL = time.Hour
	// MaxNegativeTTL caps how long a negative answer is kept: a name that
	// is about to exist should not stay missing for long.
	MaxNegativeTTL = 5 * time.Minute
)

// Key is what an answer is kept under: the question, as a resolver would
// key it, and the flags that change the answer a server gives.
type Key struct {
	// Side tells apart answers from different resolvers (the host's, the
	// cluster's) for the same name.
	Side  uint8
	Name  string // lower case, fully qualified
	Type  uint16
	Class uint16
	// EDNS0, DO and CD: whether the query had an OPT record, asked for
	// DNSSEC records, and disabled validation.
	EDNS0, DO, CD bool
}

// KeyOf is the key for q's first question, from side. q has one question
// (the router answers FORMERR to the rest).
func KeyOf(side uint8, q *dns.Msg) Key {
	k := Key{Side: side, CD: q.CheckingDisabled}
	if len(q.Question) > 0 {
		k.Name = strings.ToLower(dns.Fqdn(q.Question[0].Name))
		k.Type, k.Class = q.Question[0].Qtype, q.Question[0].Qclass
	}
	if opt := q.IsEdns0(); opt != nil {
		k.EDNS0, k.DO = true, opt.Do()
	}
	return k
}

type entry struct {
	packed  []byte
	stored  time.Time
	expires time.Time
}

// Cache is a bounded, TTL-respecting store of answers, safe for concurrent
// use.
type Cache struct {
	entries *lru.Cache[Key, entry]
	now     func() time.Time
}

// New makes an empty cache; now is the clock (nil: time.Now).
func New(now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	c, err := lru.New[Key, entry](MaxEntries)
	if err != nil {
		panic(err) // only for a size ≤ 0
	}
	return &Cache{entries: c, now: now}
}

// Get returns a fresh copy of the answer kept under k, its TTLs reduced by
// the whole seconds it has been kept, or nil if none is (or it expired).
func (c *Cache) Get(k Key) *dns.Msg {
	e, ok := c.entries.Get(k)
	if !ok {
		return nil
	}
	now := c.now()
	if !now.Before(e.expires) {
		c.entries.Remove(k)
		return nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(e.packed); err != nil {
		c.entries.Remove(k) // cannot happen: Put and PutPacked keep what reads back
		return nil
	}
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue // its "TTL" holds flags
			}
			h.Ttl = max(h.Ttl, age) - age
		}
	}
	return m
}

// Put keeps answer under k for as long as TTL says it may (see the package
// comment), and reports whether it did.
func (c *Cache) Put(k Key, answer *dns.Msg) bool {
	ttl := TTL(answer)
	if ttl <= 0 {
		return false
	}
	packed, err := answer.Pack()
	if err != nil || len(packed) > MaxAnswerSize {
		return false
	}
	// Some records a server may send do not read back as they were
	// written (miekg/dns packs what it cannot parse again): keep only what
	// Get will be able to serve.
	if err := new(dns.Msg).Unpack(packed); err != nil {
		return false
	}
	return c.keep(k, packed, ttl)
}

// PutPacked is Put for an answer that packed is the wire form of (it was
// unpacked from it), which is kept as it is: no packing again.
func (c *Cache) PutPacked(k Key, answer *dns.Msg, packed []byte) bool {
	ttl := TTL(answer)
	if ttl <= 0 || len(packed) > MaxAnswerSize {
		return false
	}
	return c.keep(k, append([]byte(nil), packed...), ttl)
}

func (c *Cache) keep(k Key, packed []byte, ttl time.Duration) bool {
	now := c.now()
	c.entries.Add(k, entry{packed: packed, stored: now, expires: now.Add(ttl)})
	return true
}

// Len is the number of answers kept (expired ones included until looked up
// or evicted).
func (c *Cache) Len() int { return c.entries.Len() }

// TTL is how long m may be kept: 0 for an answer not to keep.
func TTL(m *dns.Msg) time.Duration {
	if m.Truncated {
		return 0
	}
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		ttl, ok := minTTL(m.Answer, m.Ns)
		if !ok {
			return 0
		}
		return min(time.Duration(ttl)*time.Second, MaxTTL)
	case m.Rcode == dns.RcodeSuccess, m.Rcode == dns.RcodeNameError:
		// RFC 2308 §5: the SOA's TTL, or its MINIMUM if smaller.
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl := min(soa.Hdr.Ttl, soa.Minttl)
				return min(time.Duration(ttl)*time.Second, MaxNegativeTTL)
			}
		}
	}
	return 0
}

// minTTL is the smallest TTL of the records (OPT aside); false if there is
// none.
func minTTL(sets ...[]dns.RR) (uint32, bool) {
	var ttl uint32
	found := false
	for _, rrs := range sets {
		for _, rr := range rrs {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			if !found || h.Ttl < ttl {
				ttl, found = h.Ttl, true
			}
		}
	}
	return ttl, found
}
