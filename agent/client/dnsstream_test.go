package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// numberedDNS answers "q<N>.example." A with 10.0.<N/256>.<N%256>, so
// that each query has an answer of its own; it answers out of order, each
// after a pause that grows with N's last digit.
func numberedDNS(t testing.TB) string {
	t.Helper()
	return serveDNSOnLoopback(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(q.Name, "q"), ".example."))
		if err != nil || q.Qtype != dns.TypeA {
			m.Rcode = dns.RcodeNameError
		} else {
			time.Sleep(time.Duration(n%10) * time.Millisecond)
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A: net.IPv4(10, 0, byte(n/256), byte(n%256))})
		}
		_ = w.WriteMsg(m)
	}))
}

// askNumbered asks for q<n>.example. with the DNS message ID id and checks
// that the answer is n's own.
func askNumbered(ctx context.Context, c *client.Client, n int, id uint16) error {
	q := new(dns.Msg)
	q.SetQuestion(fmt.Sprintf("q%d.example.", n), dns.TypeA)
	q.Id = id
	raw, err := q.Pack()
	if err != nil {
		return err
	}
	ans, err := c.Exchange(ctx, raw)
	if err != nil {
		return fmt.Errorf("query %d: %w", n, err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(ans); err != nil {
		return fmt.Errorf("query %d: unpack the answer: %w", n, err)
	}
	want := net.IPv4(10, 0, byte(n/256), byte(n%256))
	if m.Id != id || len(m.Question) != 1 || m.Question[0].Name != q.Question[0].Name ||
		len(m.Answer) != 1 || !m.Answer[0].(*dns.A).A.Equal(want) {
		return fmt.Errorf("query %d got another's answer: %v", n, m)
	}
	return nil
}

func resolvConfFor(t testing.TB, ns string) string {
	return writeFile(t, "resolv.conf", fmt.Sprintf("nameserver %s\noptions timeout:5 attempts:1\n", ns))
}

func wantDNSMode(t *testing.T, c *client.Client, want string) {
	t.Helper()
	got, err := client.DNSMode(ctxTimeout(t, 10*time.Second), c)
	if err != nil || got != want {
		t.Fatalf("DNS mode = %q, %v; want %q", got, err, want)
	}
}

func TestExchangeManyQueriesInFlightOnOneStream(t *testing.T) {
	t.Parallel()
	ns := numberedDNS(t)
	a := startAgent(t, agent.Options{ResolvConfPath: resolvConfFor(t, ns)})
	c := dial(t, a.Addr(), client.Options{})
	wantDNSMode(t, c, "stream")
	// More queries than MaxDNSInFlight, all with the same DNS message ID
	// (as two apps may choose): only the stream's own ids tell them apart.
	const queries = 5 * proto.MaxDNSInFlight
	var wg sync.WaitGroup
	errs := make(chan error, queries)
	for n := range queries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- askNumbered(ctxTimeout(t, 30*time.Second), c, n, 7)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	wantDNSMode(t, c, "stream") // nothing broke it on the way
}

func TestExchangeReopensTheDNSStreamOnTheNextTunnel(t *testing.T) {
	t.Parallel()
	ns := numberedDNS(t)
	a := startAgent(t, agent.Options{ResolvConfPath: resolvConfFor(t, ns)})
	states := make(chan client.State, 10)
	c := dial(t, a.Addr(), client.Options{CommunicationTimeout: 20 * time.Second, OnState: func(s client.State, _ error) { states <- s }})
	wantDNSMode(t, c, "stream")
	if err := askNumbered(ctxTimeout(t, 10*time.Second), c, 1, 1); err != nil {
		t.Fatal(err)
	}
	a.Stop()
	if s := waitState(t, states); s != client.StateReconnecting {
		t.Fatalf("state after the agent died = %s, want reconnecting", s)
	}
	// A query while the agent is away waits for the next tunnel.
	result := make(chan error, 1)
	go func() { result <- askNumbered(ctxTimeout(t, 30*time.Second), c, 2, 2) }()
	a.Restart()
	if s := waitState(t, states); s != client.StateConnected {
		t.Fatalf("state after the agent came back = %s, want connected", s)
	}
	if err := <-result; err != nil {
		t.Fatalf("a query made while the agent was away: %v", err)
	}
	wantDNSMode(t, c, "stream")
	if err := askNumbered(ctxTimeout(t, 10*time.Second), c, 3, 3); err != nil {
		t.Fatal(err)
	}
}

// oldAgent is a minimal agent speaking the protocol as it was before
// DNSStream: it welcomes any client and answers DNS requests, one stream
// each, with an A record of 192.0.2.1. Given DNSStream, which it does not
// know, it does what such an agent does: closes the stream without a
// Result (the decoder of agents before DNSStream rejects its type), or,
// with refuse, answers with a failure.
type oldAgent struct {
	addr       string
	dnsStreams atomic.Int64 // DNS requests served, one per stream
	refused    atomic.Int64 // DNSStream requests turned down
}

func startOldAgent(t *testing.T, refuse bool) *oldAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &oldAgent{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sessions []*yamux.Session
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, s := range sessions {
			s.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			// The handshake of protocol 3: Hello and Welcome on the bare
			// connection, then the session (an agent of before DNSStream).
			if _, err := proto.ReadMessage(conn); err != nil {
				conn.Close()
				continue
			}
			if err := proto.WriteMessage(conn, proto.Welcome{Version: proto.Version}); err != nil {
				conn.Close()
				continue
			}
			sess, err := yamux.Server(conn, proto.MuxConfig(nil))
			if err != nil {
				conn.Close()
				continue
			}
			mu.Lock()
			sessions = append(sessions, sess)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				o.serve(sess, refuse, &wg)
			}()
		}
	}()
	return o
}

func (o *oldAgent) serve(sess *yamux.Session, refuse bool, wg *sync.WaitGroup) {
	defer sess.Close()
	if _, err := sess.AcceptStream(); err != nil { // the control stream
		return
	}
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			o.serveStream(st, refuse)
		}()
	}
}

func (o *oldAgent) serveStream(st *yamux.Stream, refuse bool) {
	var hdr [proto.HeaderSize]byte
	if _, err := io.ReadFull(st, hdr[:]); err != nil {
		return
	}
	if proto.Type(hdr[0]) >= proto.TypeDNSStream {
		o.refused.Add(1)
		if refuse {
			_ = proto.WriteMessage(st, proto.Result{Class: proto.ClassOther,
				Message: proto.Type(hdr[0]).String() + " cannot start a flow: send DialTCP, DialUDP, DNS, Ping, Subscribe or Env"})
		}
		return // else: the old decoder's error, and the stream is closed
	}
	body := make([]byte, int(hdr[1])<<24|int(hdr[2])<<16|int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(st, body); err != nil {
		return
	}
	m, _, err := proto.Decode(append(hdr[:], body...))
	req, ok := m.(proto.DNS)
	if err != nil || !ok {
		return
	}
	q := new(dns.Msg)
	if err := q.Unpack(req.Query); err != nil {
		return
	}
	a := new(dns.Msg)
	a.SetReply(q)
	a.Answer = append(a.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
		A: net.IPv4(192, 0, 2, 1)})
	raw, err := a.Pack()
	if err != nil {
		return
	}
	o.dnsStreams.Add(1)
	_ = proto.WriteMessage(st, proto.Result{Data: raw})
}

func TestExchangeFallsBackToAStreamPerQueryWithAnOlderAgent(t *testing.T) {
	for name, refuse := range map[string]bool{"agent closes the stream": false, "agent answers with a failure": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			old := startOldAgent(t, refuse)
			c := dial(t, old.addr, client.Options{})
			wantDNSMode(t, c, "per-query")
			const queries = 20
			var wg sync.WaitGroup
			errs := make(chan error, queries)
			for n := range queries {
				wg.Add(1)
				go func() {
					defer wg.Done()
					q := new(dns.Msg)
					q.SetQuestion(fmt.Sprintf("q%d.example.", n), dns.TypeA)
					raw, _ := q.Pack()
					ans, err := c.Exchange(ctxTimeout(t, 10*time.Second), raw)
					m := new(dns.Msg)
					if err == nil {
						err = m.Unpack(ans)
					}
					if err == nil && (m.Question[0].Name != q.Question[0].Name || len(m.Answer) != 1) {
						err = errors.New("wrong answer")
					}
					if err != nil {
						errs <- fmt.Errorf("query %d: %w", n, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := old.dnsStreams.Load(); got != queries {
				t.Errorf("the old agent served %d DNS requests, want %d (a stream each)", got, queries)
			}
			if got := old.refused.Load(); got != 1 {
				t.Errorf("the client asked the old agent %d times for a DNS stream, want once per tunnel", got)
			}
		})
	}
}

// holdFirstDNS answers every A query with 10.0.0.1 except the first,
// which it holds unanswered until the test ends; received closes when the
// first arrives, and asked counts them all.
func holdFirstDNS(t *testing.T) (ns string, received <-chan struct{}, asked *atomic.Int64) {
	t.Helper()
	first := make(chan struct{})
	release := make(chan struct{})
	asked = new(atomic.Int64)
	ns = serveDNSOnLoopback(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if asked.Add(1) == 1 {
			close(first)
			<-release
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
			A: net.IPv4(10, 0, 0, 1)})
		_ = w.WriteMsg(m)
	}))
	t.Cleanup(func() { close(release) }) // before the server's shutdown, which waits for its handlers
	return ns, first, asked
}

// askInFlight asks for q1.example. and returns where its result goes once
// the DNS server holds it.
func askInFlight(t *testing.T, c *client.Client, received <-chan struct{}) <-chan error {
	t.Helper()
	result := make(chan error, 1)
	go func() { result <- askNumbered(ctxTimeout(t, 30*time.Second), c, 1, 1) }()
	select {
	case <-received:
	case <-time.After(10 * time.Second):
		t.Fatal("the query did not reach the DNS server within 10s")
	}
	return result
}

func TestExchangeInFlightWhenTheTunnelDropsIsAskedAgain(t *testing.T) {
	t.Parallel()
	ns, received, asked := holdFirstDNS(t)
	a := startAgent(t, agent.Options{ResolvConfPath: resolvConfFor(t, ns)})
	c := dial(t, a.Addr(), client.Options{CommunicationTimeout: 20 * time.Second})
	wantDNSMode(t, c, "stream")
	result := askInFlight(t, c, received)
	a.Stop() // the tunnel drops with the query in flight on its DNS stream
	a.Restart()
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("the query in flight when the tunnel dropped: %v, want it asked again on the next tunnel", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer within 30s of the agent's return")
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("the DNS server was asked %d times, want twice (once per tunnel)", n)
	}
	wantDNSMode(t, c, "stream")
}

func TestExchangeInFlightWhenTheDNSStreamBreaksIsAskedOnAStreamOfItsOwn(t *testing.T) {
	t.Parallel()
	ns, received, asked := holdFirstDNS(t)
	a := startAgent(t, agent.Options{ResolvConfPath: resolvConfFor(t, ns)})
	c := dial(t, a.Addr(), client.Options{})
	wantDNSMode(t, c, "stream")
	result := askInFlight(t, c, received)
	if err := client.BreakDNSStream(c); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("the query in flight when the DNS stream broke: %v, want it asked again", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer within 30s of the DNS stream's end")
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("the DNS server was asked %d times, want twice", n)
	}
	// The tunnel lives on, its queries on a stream each.
	wantDNSMode(t, c, "per-query")
	if err := askNumbered(ctxTimeout(t, 10*time.Second), c, 1, 1); err != nil {
		t.Fatal(err)
	}
}
