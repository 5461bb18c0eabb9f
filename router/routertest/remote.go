package routertest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/router"
)

// Remote stands in for the agent's tunnel (router.Remote) in the router's
// tests: it records every call and answers it with the function the test
// set. A nil TCP or UDP refuses the dial (ECONNREFUSED); a nil DNS fails
// the query.
type Remote struct {
	// router.Remote is embedded, nil, only so that Remote satisfies the
	// interface whatever else it may ask of an agent besides the dials and
	// DNS (pod facts, today); the router must not call those through it
	// here, and such a call panics, failing the test loudly.
	router.Remote

	// TCP answers DialTCP: dst is the destination as the app addressed it.
	TCP func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// UDP answers DialUDP; the conn must keep datagram boundaries.
	UDP func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// DNS answers Exchange, with the query parsed and the answer packed.
	DNS func(ctx context.Context, q *dns.Msg) (*dns.Msg, error)

	mu    sync.Mutex
	calls []Call
}

// Call is one call the router made to Remote.
type Call struct {
	// Method is "DialTCP", "DialUDP" or "Exchange".
	Method string
	// Dst is the dial's destination; zero for Exchange.
	Dst netip.AddrPort
	// Query is the DNS query of an Exchange; nil for the dials.
	Query *dns.Msg
}

func (c Call) String() string {
	if c.Query != nil && len(c.Query.Question) > 0 {
		q := c.Query.Question[0]
		return fmt.Sprintf("%s %s %s", c.Method, q.Name, dns.TypeToString[q.Qtype])
	}
	return fmt.Sprintf("%s %s", c.Method, c.Dst)
}

// Calls returns the calls so far, in order.
func (r *Remote) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

func (r *Remote) record(c Call) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// DialTCP implements router.Remote.
func (r *Remote) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	r.record(Call{Method: "DialTCP", Dst: dst})
	if r.TCP == nil {
		return nil, fmt.Errorf("routertest.Remote: no TCP dialer for %s: %w", dst, syscall.ECONNREFUSED)
	}
	return r.TCP(ctx, dst)
}

// DialUDP implements router.Remote.
func (r *Remote) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	r.record(Call{Method: "DialUDP", Dst: dst})
	if r.UDP == nil {
		return nil, fmt.Errorf("routertest.Remote: no UDP dialer for %s: %w", dst, syscall.ECONNREFUSED)
	}
	return r.UDP(ctx, dst)
}

// Exchange implements router.Remote.
func (r *Remote) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	q := new(dns.Msg)
	if err := q.Unpack(query); err != nil {
		return nil, fmt.Errorf("routertest.Remote: the router sent a query that does not parse: %w", err)
	}
	r.record(Call{Method: "Exchange", Query: q})
	if r.DNS == nil {
		return nil, fmt.Errorf("routertest.Remote: no DNS answer for %v", q.Question)
	}
	m, err := r.DNS(ctx, q)
	if err != nil {
		return nil, err
	}
	return m.Pack()
}

// DialHost returns a dial function for Remote.TCP or Remote.UDP that
// connects to the host's addr instead of the destination asked for: the
// test's server plays the pod's peer.
func DialHost(network string, addr netip.AddrPort) func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr.String())
	}
}
