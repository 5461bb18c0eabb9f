package client_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/agenttest"
	"github.com/trafficpolice/trafficpolice/agent/client"
)

// sinkServer reads each connection to EOF and answers with the byte count.
func sinkServer(b *testing.B) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				_ = binary.Write(c, binary.BigEndian, n)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// BenchmarkStreamThroughput sends one bulk TCP flow through the tunnel,
// in clear (a port-forward's) and in TLS with a pinned key
// (--agent-address's), and, for scale, the same over the kernel's
// loopback directly.
func BenchmarkStreamThroughput(b *testing.B) {
	dst := sinkServer(b)
	a := startAgent(b, agent.Options{})
	c := dial(b, a.Addr(), client.Options{})
	at := startAgent(b, agent.Options{TLSKey: agenttest.Key(b)})
	ct := dial(b, at.Addr(), client.Options{Fingerprint: at.Fingerprint()})
	dialers := map[string]func() (net.Conn, error){
		"tunnel":     func() (net.Conn, error) { return c.DialTCP(context.Background(), dst) },
		"tunnel-tls": func() (net.Conn, error) { return ct.DialTCP(context.Background(), dst) },
		"kernel":     func() (net.Conn, error) { return net.Dial("tcp", dst.String()) },
	}
	for _, name := range []string{"tunnel", "tunnel-tls", "kernel"} {
		b.Run(name, func(b *testing.B) {
			conn, err := dialers[name]()
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			chunk := make([]byte, 128<<10)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for range b.N {
				if _, err := conn.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			_ = conn.(interface{ CloseWrite() error }).CloseWrite()
			var got int64
			_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
			if err := binary.Read(conn, binary.BigEndian, &got); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if want := int64(b.N) * int64(len(chunk)); got != want {
				b.Fatalf("the server got %d bytes, want %d", got, want)
			}
		})
	}
}

// BenchmarkDialTCP measures opening and closing one flow: a stream, the
// agent's dial from the pod, and the Result; the kernel's own dial for scale.
func BenchmarkDialTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			s, err := ln.Accept()
			if err != nil {
				return
			}
			s.Close()
		}
	}()
	dst := netip.MustParseAddrPort(ln.Addr().String())
	a := startAgent(b, agent.Options{})
	c := dial(b, a.Addr(), client.Options{})
	dialers := map[string]func() (net.Conn, error){
		"tunnel": func() (net.Conn, error) { return c.DialTCP(context.Background(), dst) },
		"kernel": func() (net.Conn, error) { return net.Dial("tcp", dst.String()) },
	}
	for _, name := range []string{"tunnel", "kernel"} {
		b.Run(name, func(b *testing.B) {
			for range b.N {
				conn, err := dialers[name]()
				if err != nil {
					b.Fatal(err)
				}
				conn.Close()
			}
		})
	}
}

// BenchmarkExchange resolves one name through the agent, whose pod's
// resolv.conf names a DNS server on loopback, and, as the kernel path it
// replaces, asks the same server directly over UDP (a socket per query,
// as the app's resolver does). "parallel" keeps 8 queries per CPU in
// flight (make bench's DNS row uses 8 clients).
func BenchmarkExchange(b *testing.B) {
	ns := clusterDNS(b)
	server := net.JoinHostPort(ns, "53")
	rc := writeFile(b, "resolv.conf", fmt.Sprintf("nameserver %s\noptions timeout:2 attempts:1\n", ns))
	a := startAgent(b, agent.Options{ResolvConfPath: rc})
	c := dial(b, a.Addr(), client.Options{})
	q := new(dns.Msg)
	q.SetQuestion("uwu-service.default.svc.cluster.local.", dns.TypeA)
	query, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	exchangers := map[string]func() ([]byte, error){
		"tunnel": func() ([]byte, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return c.Exchange(ctx, query)
		},
		"kernel": func() ([]byte, error) { return udpExchange(server, query) },
	}
	check := func(answer []byte, err error) error {
		if err != nil {
			return err
		}
		var m dns.Msg
		if err := m.Unpack(answer); err != nil {
			return err
		}
		if len(m.Answer) != 1 {
			return fmt.Errorf("answer has %d records, want 1: %v", len(m.Answer), m.Answer)
		}
		return nil
	}
	for _, name := range []string{"tunnel", "kernel"} {
		exchange := exchangers[name]
		b.Run(name+"/sequential", func(b *testing.B) {
			cpu := startCPUMetric(b)
			for b.Loop() {
				if err := check(exchange()); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report()
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			b.SetParallelism(8)
			cpu := startCPUMetric(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := check(exchange()); err != nil {
						b.Error(err)
						return
					}
				}
			})
			cpu.report()
		})
	}
}

// udpExchange sends query to server from a socket of its own and returns
// the first datagram that comes back.
func udpExchange(server string, query []byte) ([]byte, error) {
	conn, err := net.Dial("udp", server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, dns.DefaultMsgSize) // an EDNS0 resolver's
	n, err := conn.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// cpuMetric reports the CPU time the process (client, agent and DNS
// server alike) spent per operation: on a shared, loaded machine the
// wall-clock ns/op mostly measures the wait for a CPU, this what each
// operation costs.
type cpuMetric struct {
	b     *testing.B
	start time.Duration
}

func startCPUMetric(b *testing.B) cpuMetric { return cpuMetric{b: b, start: processCPU(b)} }

func (m cpuMetric) report() {
	m.b.ReportMetric(float64(processCPU(m.b)-m.start)/float64(m.b.N), "cpu-ns/op")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
