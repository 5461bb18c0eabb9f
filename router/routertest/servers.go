package routertest

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
)

var localhost = netip.MustParseAddr("127.0.0.1")

// EchoTCP starts a TCP server on the host's 127.0.0.1 that echoes each
// connection until its client half-closes, then closes its side; it stops
// when the test ends.
func EchoTCP(t testing.TB) netip.AddrPort {
	t.Helper()
	return EchoTCPOn(t, localhost)
}

// EchoTCPOn is EchoTCP on another of the host's addresses (any of
// 127.0.0.0/8 is the host's on Linux).
func EchoTCPOn(t testing.TB, addr netip.Addr) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
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
	return EchoUDPOn(t, localhost)
}

// EchoUDPOn is EchoUDP on another of the host's addresses.
func EchoUDPOn(t testing.TB, addr netip.Addr) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
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
