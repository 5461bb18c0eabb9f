package client_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// clusterDNS is a real DNS server standing in for the cluster's: it
// listens on port 53 (resolv.conf has no port) of a loopback address of
// its own, over UDP and TCP.
func clusterDNS(t testing.TB) string {
	t.Helper()
	netnstest.RequireRoot(t)
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 30}
		switch {
		case q.Name == "uwu-service.default.svc.cluster.local." && q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP("10.96.0.20")})
		case q.Name == "uwu-app." && q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP("192.0.2.99")}) // the hosts file must win
		case q.Name == "_http._tcp.uwu-service.default.svc.cluster.local." && q.Qtype == dns.TypeSRV:
			m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr, Priority: 0, Weight: 100, Port: 80, Target: "uwu-service.default.svc.cluster.local."})
		case q.Name == "big.example." && q.Qtype == dns.TypeTXT:
			if w.RemoteAddr().Network() == "udp" {
				m.Truncated = true // too big for UDP: the resolver must retry over TCP
				break
			}
			for i := range 20 {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{fmt.Sprintf("%02d-%s", i, strings.Repeat("x", 97))}})
			}
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	return serveDNSOnLoopback(t, h)
}

// serveDNSOnLoopback serves h on port 53 (resolv.conf has no port) of a
// loopback address of its own, over UDP and TCP, and returns the address.
func serveDNSOnLoopback(t testing.TB, h dns.Handler) string {
	t.Helper()
	netnstest.RequireRoot(t)
	for range 20 {
		ip := fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(100), rand.IntN(256), 1+rand.IntN(254))
		addr := net.JoinHostPort(ip, "53")
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			continue
		}
		udp, tcp := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h}
		go func() { _ = udp.ActivateAndServe() }()
		go func() { _ = tcp.ActivateAndServe() }()
		t.Cleanup(func() {
			_ = udp.Shutdown()
			_ = tcp.Shutdown()
		})
		return ip
	}
	t.Fatal("no free loopback address for a DNS server on port 53")
	return ""
}

func TestExchangeResolvesAsThePodDoes(t *testing.T) {
	t.Parallel()
	ns := clusterDNS(t)
	// The first nameserver has nobody listening: the agent moves on.
	rc := writeFile(t, "resolv.conf", fmt.Sprintf("search default.svc.cluster.local svc.cluster.local\nnameserver 127.99.0.1\nnameserver %s\noptions ndots:5 timeout:2 attempts:1\n", ns))
	hosts := writeFile(t, "hosts", "127.0.0.1 localhost\n10.1.2.3 uwu-app uwu-app.default.pod\nfd00::3 uwu-app\n")
	a := startAgent(t, agent.Options{ResolvConfPath: rc, HostsPath: hosts})
	c := dial(t, a.Addr(), client.Options{})

	ask := func(name string, qtype uint16) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		raw, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		ans, err := c.Exchange(ctxTimeout(t, 10*time.Second), raw)
		if err != nil {
			t.Fatalf("Exchange %s %s: %v", name, dns.TypeToString[qtype], err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(ans); err != nil {
			t.Fatalf("unpack the answer for %s: %v", name, err)
		}
		if m.Id != q.Id {
			t.Errorf("answer ID %d, query ID %d", m.Id, q.Id)
		}
		return m
	}
	one := func(m *dns.Msg) string {
		t.Helper()
		if len(m.Answer) != 1 {
			t.Fatalf("want one answer, got %v", m.Answer)
		}
		f := strings.Fields(m.Answer[0].String())
		return f[len(f)-1]
	}

	if got := one(ask("uwu-app.", dns.TypeA)); got != "10.1.2.3" {
		t.Errorf("A uwu-app. = %s, want 10.1.2.3 from the pod's hosts file", got)
	}
	if got := one(ask("UWU-APP.", dns.TypeAAAA)); got != "fd00::3" {
		t.Errorf("AAAA UWU-APP. = %s, want fd00::3 from the hosts file", got)
	}
	if got := one(ask("3.2.1.10.in-addr.arpa.", dns.TypePTR)); got != "uwu-app." {
		t.Errorf("PTR 10.1.2.3 = %s, want uwu-app.", got)
	}
	if got := one(ask("uwu-service.default.svc.cluster.local.", dns.TypeA)); got != "10.96.0.20" {
		t.Errorf("A uwu-service = %s, want 10.96.0.20 from the cluster's DNS", got)
	}
	srv := ask("_http._tcp.uwu-service.default.svc.cluster.local.", dns.TypeSRV)
	if s, ok := srv.Answer[0].(*dns.SRV); !ok || s.Port != 80 || s.Target != "uwu-service.default.svc.cluster.local." {
		t.Errorf("SRV answer = %v", srv.Answer)
	}
	big := ask("big.example.", dns.TypeTXT)
	if big.Truncated || len(big.Answer) != 20 {
		t.Errorf("TXT big.example.: truncated=%v with %d records, want the whole answer over TCP", big.Truncated, len(big.Answer))
	}
	if m := ask("missing.example.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("missing name: rcode %s, want NXDOMAIN", dns.RcodeToString[m.Rcode])
	}

	_, err := c.Exchange(ctxTimeout(t, 5*time.Second), []byte{1, 2, 3})
	var re *client.RemoteError
	if !errors.As(err, &re) || re.Class != proto.ClassOther || !strings.Contains(err.Error(), "unpack DNS query") {
		t.Errorf("malformed query: %v, want a RemoteError of class other", err)
	}
}
