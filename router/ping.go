package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pinger sends the app's echo requests from the host. It prefers an ICMP
// datagram socket per ping (SOCK_DGRAM, IPPROTO_ICMP: the kernel picks
// the identifier and hands the socket only its own replies), which
// net.ipv4.ping_group_range allows or refuses per group. Where it is
// refused, every ping of a family shares one raw socket, opened on first
// use, whose reader hands each reply to the ping waiting for it, by
// (address, identifier, sequence): a raw socket sees all of the host's
// ICMP, so one is the most the router keeps.
type pinger struct {
	ctx context.Context // the router's: ends the raw sockets' readers
	wg  *sync.WaitGroup

	mu      sync.Mutex
	noDgram [2]bool // datagram ICMP refused, by family (0: v4, 1: v6)
	raw     [2]*rawPinger
}

// echoKey finds the ping a reply answers.
type echoKey struct {
	from    netip.Addr
	id, seq int
}

type rawPinger struct {
	c       *icmp.PacketConn
	proto   int
	mu      sync.Mutex
	waiting map[echoKey]chan []byte
}

// ping sends the echo request req (an ICMP message, the app's identifier,
// sequence and data) to dst and returns the answer's ICMP message, with
// the app's identifier.
func (p *pinger) ping(ctx context.Context, dst netip.Addr, req []byte, v6 bool) ([]byte, error) {
	fam, proto := 0, 1
	if v6 {
		fam, proto = 1, 58
	}
	msg, err := icmp.ParseMessage(proto, req)
	if err != nil {
		return nil, fmt.Errorf("parse echo request: %w", err)
	}
	want, ok := msg.Body.(*icmp.Echo)
	if !ok {
		return nil, errors.New("not an echo request")
	}
	ctx, cancel := context.WithTimeout(ctx, echoTimeout)
	defer cancel()

	p.mu.Lock()
	dgramRefused := p.noDgram[fam]
	p.mu.Unlock()
	if !dgramRefused {
		reply, err := pingDgram(ctx, dst, msg, want, v6)
		if !errors.Is(err, errDgramRefused) {
			return reply, err
		}
		p.mu.Lock()
		p.noDgram[fam] = true
		p.mu.Unlock()
	}
	rp, err := p.rawFor(fam)
	if err != nil {
		return nil, fmt.Errorf("ping from the host: %w", err)
	}
	return rp.ping(ctx, dst, msg, want)
}

var errDgramRefused = errors.New("ICMP datagram sockets are not allowed for this group (net.ipv4.ping_group_range)")

// pingDgram pings from a datagram socket of its own. The kernel replaces
// the identifier with the socket's; the reply gets the app's back.
func pingDgram(ctx context.Context, dst netip.Addr, msg *icmp.Message, want *icmp.Echo, v6 bool) ([]byte, error) {
	network, listen, proto := "udp4", "0.0.0.0", 1
	if v6 {
		network, listen, proto = "udp6", "::", 58
	}
	c, err := listenICMP(network, listen)
	if err != nil {
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EPROTONOSUPPORT) {
			return nil, errDgramRefused
		}
		return nil, fmt.Errorf("ping from the host: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	out, err := msg.Marshal(nil)
	if err != nil {
		return nil, err
	}
	if _, err := c.WriteTo(out, &net.UDPAddr{IP: dst.AsSlice()}); err != nil {
		return nil, fmt.Errorf("ping from the host: %w", err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return nil, fmt.Errorf("no echo reply from %s: %w", dst, timeoutErr(ctx, err))
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.Seq == want.Seq {
			e.ID = want.ID
			return m.Marshal(nil) // echoReply sets the checksum for the app
		}
	}
}

// timeoutErr reports a read ended by ctx as the timeout it is.
func timeoutErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return os.ErrDeadlineExceeded
	}
	return err
}

// rawFor returns the family's shared raw socket, opening it (and its
// reader) on first use.
func (p *pinger) rawFor(fam int) (*rawPinger, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.raw[fam] != nil {
		return p.raw[fam], nil
	}
	network, listen, proto := "ip4:icmp", "0.0.0.0", 1
	if fam == 1 {
		network, listen, proto = "ip6:ipv6-icmp", "::", 58
	}
	c, err := listenICMP(network, listen)
	if err != nil {
		return nil, err
	}
	rp := &rawPinger{c: c, proto: proto, waiting: map[echoKey]chan []byte{}}
	p.raw[fam] = rp
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		rp.read()
	}()
	context.AfterFunc(p.ctx, func() { _ = c.Close() })
	return rp, nil
}

func (rp *rawPinger) ping(ctx context.Context, dst netip.Addr, msg *icmp.Message, want *icmp.Echo) ([]byte, error) {
	key := echoKey{from: dst, id: want.ID, seq: want.Seq}
	ch := make(chan []byte, 1)
	rp.mu.Lock()
	if _, busy := rp.waiting[key]; busy {
		rp.mu.Unlock()
		return nil, fmt.Errorf("a ping to %s with identifier %d and sequence %d is already waiting for its reply", dst, want.ID, want.Seq)
	}
	rp.waiting[key] = ch
	rp.mu.Unlock()
	defer func() {
		rp.mu.Lock()
		delete(rp.waiting, key)
		rp.mu.Unlock()
	}()
	out, err := msg.Marshal(nil) // the kernel computes the ICMPv6 checksum
	if err != nil {
		return nil, err
	}
	if _, err := rp.c.WriteTo(out, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return nil, fmt.Errorf("ping from the host: %w", err)
	}
	select {
	case reply := <-ch:
		return reply, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no echo reply from %s: %w", dst, os.ErrDeadlineExceeded)
	}
}

// read hands each echo reply to the ping waiting for it, until the socket
// is closed.
func (rp *rawPinger) read() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := rp.c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ip, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		addr, ok := netip.AddrFromSlice(ip.IP)
		if !ok {
			continue
		}
		m, err := icmp.ParseMessage(rp.proto, buf[:n])
		if err != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok {
			continue
		}
		rp.mu.Lock()
		ch := rp.waiting[echoKey{from: addr.Unmap(), id: e.ID, seq: e.Seq}]
		rp.mu.Unlock()
		if ch != nil {
			select {
			case ch <- append([]byte(nil), buf[:n]...):
			default: // a duplicate reply
			}
		}
	}
}
