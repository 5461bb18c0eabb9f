package client_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent"
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

// BenchmarkStreamThroughput sends one bulk TCP flow through the tunnel
// and, for scale, the same over the kernel's loopback directly.
func BenchmarkStreamThroughput(b *testing.B) {
	dst := sinkServer(b)
	a := startAgent(b, agent.Options{})
	c := dial(b, a.Addr(), client.Options{})
	dialers := map[string]func() (net.Conn, error){
		"tunnel": func() (net.Conn, error) { return c.DialTCP(context.Background(), dst) },
		"kernel": func() (net.Conn, error) { return net.Dial("tcp", dst.String()) },
	}
	for _, name := range []string{"tunnel", "kernel"} {
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
