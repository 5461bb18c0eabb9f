package dnscache

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func question(name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	return q
}

func answerA(q *dns.Msg, ttls ...uint32) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	for i, ttl := range ttls {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A:   net.IPv4(10, 0, 0, byte(i+1)),
		})
	}
	return m
}

func negative(q *dns.Msg, rcode int, soaTTL, minimum uint32) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(q, rcode)
	m.Ns = []dns.RR{&dns.SOA{
		Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: soaTTL},
		Ns:  "ns.test.", Mbox: "admin.test.", Serial: 1, Refresh: 60, Retry: 60, Expire: 600, Minttl: minimum,
	}}
	return m
}

func TestTTL(t *testing.T) {
	q := question("db.test", dns.TypeA)
	trunc := answerA(q, 60)
	trunc.Truncated = true
	servfail := new(dns.Msg)
	servfail.SetRcode(q, dns.RcodeServerFailure)
	nodataNoSOA := new(dns.Msg)
	nodataNoSOA.SetReply(q)
	for _, c := range []struct {
		name string
		m    *dns.Msg
		want time.Duration
	}{
		{"smallest of the records", answerA(q, 300, 30, 60), 30 * time.Second},
		{"TTL 0 is not kept", answerA(q, 60, 0), 0},
		{"capped", answerA(q, 7*24*3600), MaxTTL},
		{"NXDOMAIN: the SOA's minimum when smaller", negative(q, dns.RcodeNameError, 3600, 20), 20 * time.Second},
		{"NODATA: the SOA's TTL when smaller", negative(q, dns.RcodeSuccess, 15, 900), 15 * time.Second},
		{"negative, capped", negative(q, dns.RcodeNameError, 86400, 86400), MaxNegativeTTL},
		{"negative without a SOA", nodataNoSOA, 0},
		{"server failure", servfail, 0},
		{"truncated", trunc, 0},
	} {
		if got := TTL(c.m); got != c.want {
			t.Errorf("%s: TTL = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestGetAgesAndExpires(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	c := New(clk.now)
	q := question("db.test", dns.TypeA)
	k := KeyOf(1, q)
	if !c.Put(k, answerA(q, 60, 300)) {
		t.Fatal("Put refused an answer with a TTL")
	}
	clk.t = clk.t.Add(20*time.Second + 500*time.Millisecond)
	m := c.Get(k)
	if m == nil {
		t.Fatal("Get after 20 s of 60: nothing")
	}
	if got := []uint32{m.Answer[0].Header().Ttl, m.Answer[1].Header().Ttl}; got[0] != 40 || got[1] != 280 {
		t.Errorf("TTLs after 20.5 s = %v, want [40 280]", got)
	}
	// The copy is the caller's: changing it leaves the kept answer alone.
	m.Answer[0].Header().Ttl = 9999
	if again := c.Get(k); again.Answer[0].Header().Ttl != 40 {
		t.Errorf("a caller's change reached the cache: TTL %d", again.Answer[0].Header().Ttl)
	}
	clk.t = clk.t.Add(39 * time.Second) // 59.5 s
	if m := c.Get(k); m == nil || m.Answer[0].Header().Ttl != 1 {
		t.Errorf("Get at 59.5 s: %v, want TTL 1", m)
	}
	clk.t = clk.t.Add(500 * time.Millisecond) // 60 s
	if m := c.Get(k); m != nil {
		t.Errorf("Get at 60 s of 60: %v, want nothing", m)
	}
	if c.Len() != 0 {
		t.Errorf("an expired entry stayed after its lookup: %d", c.Len())
	}
}

func TestKeysTellAnswersApart(t *testing.T) {
	c := New(nil)
	a := question("DB.test", dns.TypeA)
	c.Put(KeyOf(1, a), answerA(a, 60))
	if c.Get(KeyOf(1, question("db.TEST.", dns.TypeA))) == nil {
		t.Error("names differing in case only are one name")
	}
	do := question("db.test", dns.TypeA)
	do.SetEdns0(1232, true)
	plain := question("db.test", dns.TypeA)
	plain.SetEdns0(1232, false)
	cd := question("db.test", dns.TypeA)
	cd.CheckingDisabled = true
	for name, k := range map[string]Key{
		"other side": KeyOf(2, a), "AAAA": KeyOf(1, question("db.test", dns.TypeAAAA)),
		"other name": KeyOf(1, question("db2.test", dns.TypeA)), "DO": KeyOf(1, do),
		"EDNS0": KeyOf(1, plain), "CD": KeyOf(1, cd),
	} {
		if c.Get(k) != nil {
			t.Errorf("%s: got the answer kept for another question", name)
		}
	}
}

func TestBounded(t *testing.T) {
	c := New(nil)
	q := question("big.test", dns.TypeA)
	ttls := make([]uint32, 300) // 300 A records: > MaxAnswerSize packed
	for i := range ttls {
		ttls[i] = 60
	}
	big := answerA(q, ttls...)
	big.Compress = false
	if c.Put(KeyOf(1, q), big) {
		t.Error("an answer over MaxAnswerSize was kept")
	}
	for i := range MaxEntries + 100 {
		q := question(fmt.Sprintf("n%d.test", i), dns.TypeA)
		c.Put(KeyOf(1, q), answerA(q, 60))
	}
	if c.Len() != MaxEntries {
		t.Errorf("Len = %d after %d answers, want the bound %d", c.Len(), MaxEntries+100, MaxEntries)
	}
	if c.Get(KeyOf(1, question("n0.test", dns.TypeA))) != nil {
		t.Error("the least recently used answer was not the one evicted")
	}
	if c.Get(KeyOf(1, question(fmt.Sprintf("n%d.test", MaxEntries+99), dns.TypeA))) == nil {
		t.Error("the newest answer was evicted")
	}
}

// FuzzPutGet feeds the cache answers as a nameserver could send them: it
// must neither fail nor serve a record longer than its TTL said.
func FuzzPutGet(f *testing.F) {
	q := question("db.test", dns.TypeA)
	for _, m := range []*dns.Msg{answerA(q, 60, 5), negative(q, dns.RcodeNameError, 30, 10), answerA(q, 0)} {
		b, _ := m.Pack()
		f.Add(b, uint16(3))
	}
	f.Fuzz(func(t *testing.T, raw []byte, wait uint16) {
		m := new(dns.Msg)
		if m.Unpack(raw) != nil || len(m.Question) == 0 {
			return
		}
		clk := &clock{t: time.Unix(1_000_000, 0)}
		c := New(clk.now)
		k := KeyOf(0, m)
		kept := c.Put(k, m)
		// The same answer kept as it came (raw is its wire form) must be
		// served the same way.
		asCame := New(clk.now)
		keptAsCame := asCame.PutPacked(k, m, raw)
		clk.t = clk.t.Add(time.Duration(wait) * time.Second)
		gotAsCame := asCame.Get(k)
		if keptAsCame && len(raw) <= MaxAnswerSize && time.Duration(wait)*time.Second < TTL(m) && gotAsCame == nil {
			t.Fatal("lost an answer kept as it came within its TTL")
		}
		if gotAsCame != nil && (len(gotAsCame.Answer) != len(m.Answer) || gotAsCame.Rcode != m.Rcode) {
			t.Fatalf("answer kept as it came changed: %v vs %v", gotAsCame, m)
		}
		got := c.Get(k)
		if !kept || time.Duration(wait)*time.Second >= TTL(m) {
			if got != nil {
				t.Fatalf("served an answer kept %v > its TTL %v (kept %v)", time.Duration(wait)*time.Second, TTL(m), kept)
			}
			return
		}
		if got == nil {
			t.Fatal("lost an answer within its TTL")
		}
		if len(got.Answer) != len(m.Answer) || got.Rcode != m.Rcode {
			t.Fatalf("answer changed in the cache: %v vs %v", got, m)
		}
		for i, rr := range got.Answer {
			if rr.Header().Rrtype != dns.TypeOPT && rr.Header().Ttl > m.Answer[i].Header().Ttl {
				t.Fatalf("record %d's TTL grew: %d > %d", i, rr.Header().Ttl, m.Answer[i].Header().Ttl)
			}
		}
	})
}
