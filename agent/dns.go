package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// hostsTTL is the TTL of answers made from /etc/hosts: short, since the
// file may change, but not zero so that a burst of lookups is cached.
const hostsTTL = 10

// dnsResolver answers raw queries as the pod's resolver would: names in
// the pod's /etc/hosts first (A, AAAA, PTR), then the nameservers of its
// /etc/resolv.conf. It resolves names as given: search-domain expansion is
// the app's resolver's job.
type dnsResolver struct {
	resolvConf *resolvConfFile
	hosts      *hostsFile
}

func (r *dnsResolver) resolve(ctx context.Context, query []byte) ([]byte, error) {
	var q dns.Msg
	if err := q.Unpack(query); err != nil {
		return nil, fmt.Errorf("unpack DNS query of %d bytes: %w", len(query), err)
	}
	if len(q.Question) == 0 {
		return nil, errors.New("DNS query has no question")
	}
	table, err := r.hosts.get()
	if err != nil {
		return nil, err
	}
	if answer := answerFromHosts(&q, table); answer != nil {
		b, err := answer.Pack()
		if err != nil {
			return nil, fmt.Errorf("pack answer from hosts file: %w", err)
		}
		return b, nil
	}
	rc, err := r.resolvConf.get()
	if err != nil {
		return nil, err
	}
	return forward(ctx, rc, query)
}

// answerFromHosts answers an A, AAAA or PTR query for a name the hosts
// file lists, or returns nil. A name listed without an address of the
// asked family gets an empty answer (NODATA), as from a zone that has it.
func answerFromHosts(q *dns.Msg, t hostsTable) *dns.Msg {
	if len(q.Question) != 1 || q.Question[0].Qclass != dns.ClassINET {
		return nil
	}
	question := q.Question[0]
	name := strings.ToLower(question.Name)
	hdr := dns.RR_Header{Name: question.Name, Class: dns.ClassINET, Rrtype: question.Qtype, Ttl: hostsTTL}
	var rrs []dns.RR
	switch question.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		addrs, ok := t.byName[name]
		if !ok {
			return nil
		}
		for _, a := range addrs {
			switch {
			case question.Qtype == dns.TypeA && a.Is4():
				rrs = append(rrs, &dns.A{Hdr: hdr, A: a.AsSlice()})
			case question.Qtype == dns.TypeAAAA && a.Is6():
				rrs = append(rrs, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
	case dns.TypePTR:
		target, ok := t.byAddr[name]
		if !ok {
			return nil
		}
		rrs = append(rrs, &dns.PTR{Hdr: hdr, Ptr: target})
	default:
		return nil
	}
	answer := new(dns.Msg)
	answer.SetReply(q)
	answer.Authoritative = true
	answer.RecursionAvailable = true
	answer.Answer = rrs
	if opt := q.IsEdns0(); opt != nil {
		answer.SetEdns0(opt.UDPSize(), false)
	}
	return answer
}

// forward sends the raw query to the nameservers in order, Attempts rounds
// at most, UDP first and TCP when the answer is truncated, and returns the
// first answer whole.
func forward(ctx context.Context, rc resolvConf, query []byte) ([]byte, error) {
	servers := rc.servers()
	if len(servers) == 0 {
		return nil, errors.New("the pod's resolv.conf lists no nameserver")
	}
	var errs []error
	for range rc.Attempts {
		for _, s := range servers {
			answer, err := exchangeRaw(ctx, "udp", s, query, rc.Timeout)
			if err == nil && truncated(answer) {
				answer, err = exchangeRaw(ctx, "tcp", s, query, rc.Timeout)
			}
			if err == nil {
				return answer, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("resolve with the pod's nameservers: %w", errors.Join(errs...))
			}
		}
	}
	return nil, fmt.Errorf("resolve with the pod's nameservers: %w", errors.Join(errs...))
}

func truncated(msg []byte) bool { return len(msg) > 2 && msg[2]&0x02 != 0 }

// answerBuffers are read buffers of the largest DNS message, reused: one
// allocated (and cleared) for every query cost more than the query's own
// system calls.
var answerBuffers = sync.Pool{New: func() any {
	b := make([]byte, dns.MaxMsgSize)
	return &b
}}

// exchangeRaw sends query to server and returns the raw answer with the
// same ID, not re-encoded, so it reaches the app exactly as the pod's
// nameserver sent it.
func exchangeRaw(ctx context.Context, network, server string, query []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, fmt.Errorf("dial nameserver %s/%s: %w", server, network, err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	if err := c.SetDeadline(dl); err != nil {
		return nil, fmt.Errorf("set deadline on nameserver connection: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	dc := &dns.Conn{Conn: c}
	if _, err := dc.Write(query); err != nil {
		return nil, fmt.Errorf("send query to %s/%s: %w", server, network, err)
	}
	bp := answerBuffers.Get().(*[]byte)
	defer answerBuffers.Put(bp)
	buf := *bp
	for {
		n, err := dc.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", err, ctx.Err())
			}
			return nil, fmt.Errorf("read answer from %s/%s: %w", server, network, err)
		}
		if n >= 12 && buf[0] == query[0] && buf[1] == query[1] && buf[2]&0x80 != 0 {
			return append([]byte(nil), buf[:n]...), nil
		}
		if network == "tcp" {
			return nil, fmt.Errorf("nameserver %s/tcp answered with a different ID", server)
		}
		// On UDP a stray or late datagram is not our answer: keep waiting.
	}
}
