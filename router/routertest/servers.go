package routertest

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
)

// EchoTCP starts a TCP server on the host's 127.0.0.1 that echoes each
// connection until its client half-closes, then closes its side; it stops
// when the test ends.
func EchoTCP(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.CloseWrite()
			}()
		}
	}()
	return unmapped(ln.Addr().(*net.TCPAddr).AddrPort())
}

// EchoUDP starts a UDP server on the host's 127.0.0.1 that sends every
// datagram back to where it came from; it stops when the test ends.
func EchoUDP(t testing.TB) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			_, _ = pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return unmapped(pc.LocalAddr().(*net.UDPAddr).AddrPort())
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
