package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/netns"
)

// The servers' ports, in the server netns.
const (
	portBulk  = 5001 // 'U': sink, answers the byte count; 'D'+duration: source
	portEcho  = 5002 // 4-byte size, then echo messages of that size
	portCRR   = 5003 // read 1 byte, write 1 byte, close
	portHold  = 5004 // echo 1 byte, then hold the connection until EOF
	portUDP   = 5005 // UDP echo
	portDNS   = 53   // answers every A query with the server's address
	chunkSize = 128 << 10
)

// servers run inside the server netns, in the bench process itself: the
// sockets belong to the namespace they were created in, whichever thread
// serves them later.
type servers struct {
	wg      sync.WaitGroup
	closers []io.Closer
	answer  netip.Addr
}

func startServers(ns *netns.Namespace, answer netip.Addr) (*servers, error) {
	s := &servers{answer: answer}
	handlers := map[int]func(net.Conn){portBulk: s.bulk, portEcho: s.echo, portCRR: s.crr, portHold: s.hold}
	err := ns.Do(func() error {
		for port, h := range handlers {
			ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
			if err != nil {
				return fmt.Errorf("listen on tcp port %d: %w", port, err)
			}
			s.closers = append(s.closers, ln)
			s.serveTCP(ln, h)
		}
		pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", portUDP))
		if err != nil {
			return fmt.Errorf("listen on udp port %d: %w", portUDP, err)
		}
		s.closers = append(s.closers, pc)
		s.wg.Add(1)
		go func() { defer s.wg.Done(); udpEcho(pc) }()
		dpc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", portDNS))
		if err != nil {
			return fmt.Errorf("listen on udp port %d: %w", portDNS, err)
		}
		srv := &dns.Server{PacketConn: dpc, Handler: dns.HandlerFunc(s.answerDNS)}
		s.closers = append(s.closers, closerFunc(srv.Shutdown))
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Add(1)
		go func() { defer s.wg.Done(); srv.ActivateAndServe() }()
		<-started
		return nil
	})
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func (s *servers) close() {
	for _, c := range s.closers {
		c.Close()
	}
	s.wg.Wait()
}

func (s *servers) serveTCP(ln net.Listener, h func(net.Conn)) {
	var conns sync.Map
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				// Listener closed: end the connections still open.
				conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
				return
			}
			conns.Store(c, true)
			go func() {
				defer conns.Delete(c)
				defer c.Close()
				h(c)
			}()
		}
	}()
}

// bulk is the throughput server. 'U': read to EOF, answer the count.
// 'D' + 8-byte nanoseconds: write for that long, then close.
func (s *servers) bulk(c net.Conn) {
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		return
	}
	buf := make([]byte, chunkSize)
	switch op[0] {
	case 'U':
		n, _ := io.CopyBuffer(io.Discard, onlyReader{c}, buf)
		var ans [8]byte
		binary.BigEndian.PutUint64(ans[:], uint64(n))
		c.Write(ans[:])
	case 'D':
		var d [8]byte
		if _, err := io.ReadFull(c, d[:]); err != nil {
			return
		}
		end := time.Now().Add(time.Duration(binary.BigEndian.Uint64(d[:])))
		for time.Now().Before(end) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}

// onlyReader hides WriterTo, so io.CopyBuffer uses the given buffer.
type onlyReader struct{ io.Reader }

func (s *servers) echo(c net.Conn) {
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size == 0 || size > 1<<20 {
		return
	}
	buf := make([]byte, size)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

func (s *servers) crr(c net.Conn) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return
	}
	c.Write(b[:])
}

func (s *servers) hold(c net.Conn) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return
	}
	if _, err := c.Write(b[:]); err != nil {
		return
	}
	for {
		if _, err := c.Read(b[:]); err != nil {
			return
		}
	}
}

func udpEcho(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pc.WriteTo(buf[:n], from)
	}
}

func (s *servers) answerDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   s.answer.AsSlice(),
		})
	}
	w.WriteMsg(m)
}
