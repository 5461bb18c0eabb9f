package agent

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// udpEcho is a UDP server on loopback that sends each datagram back.
func udpEcho(t *testing.T) netip.AddrPort {
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
				return
			}
			_, _ = pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// waitUDPFlows waits until the agent has n UDP flows open.
func waitUDPFlows(t *testing.T, s *Server, n int64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); s.udpFlows.Load() != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent has %d UDP flows open, want %d", s.udpFlows.Load(), n)
		}
	}
}

func echoOnce(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("uwu")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "uwu" {
		t.Fatalf("UDP echo through the agent: %q, %v", buf[:n], err)
	}
}

func TestUDPFlowsPerTunnelAreCapped(t *testing.T) {
	const max = 8
	s := newTestServer(t, Options{MaxUDPFlows: max})
	addr := serve(t, s)
	echo := udpEcho(t)
	ctx, cl := dialTestClient(t, addr)

	var flows []net.Conn
	for range max {
		c, err := cl.DialUDP(ctx, echo)
		if err != nil {
			t.Fatalf("UDP flow %d of %d: %v", len(flows)+1, max, err)
		}
		defer c.Close()
		echoOnce(t, c)
		flows = append(flows, c)
	}
	waitUDPFlows(t, s, max)
	c, err := cl.DialUDP(ctx, echo)
	if err == nil {
		c.Close()
		t.Fatalf("UDP flow %d opened on a tunnel capped at %d", max+1, max)
	}
	if !strings.Contains(err.Error(), "UDP flows") {
		t.Errorf("the refusal does not say why: %v", err)
	}
	// One ending makes room for another.
	flows[0].Close()
	waitUDPFlows(t, s, max-1)
	c, err = cl.DialUDP(ctx, echo)
	if err != nil {
		t.Fatalf("a UDP flow after one ended: %v", err)
	}
	defer c.Close()
	echoOnce(t, c)
}

func TestIdleUDPFlowsExpire(t *testing.T) {
	s := newTestServer(t, Options{UDPIdleTimeout: 200 * time.Millisecond})
	addr := serve(t, s)
	echo := udpEcho(t)
	ctx, cl := dialTestClient(t, addr)
	for range 4 {
		c, err := cl.DialUDP(ctx, echo)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close() // the client keeps them open: only the agent ends them
		echoOnce(t, c)
	}
	t0 := time.Now()
	waitUDPFlows(t, s, 0)
	t.Logf("expired after %s", time.Since(t0))
}

func TestNewRejectsANegativeUDPFlowCap(t *testing.T) {
	if _, err := New(Options{Token: "x", MaxUDPFlows: -1}); err == nil || !strings.Contains(err.Error(), "MaxUDPFlows -1") {
		t.Errorf("negative MaxUDPFlows: %v, want an error naming it", err)
	}
}

// A burst of datagrams from the pod's peer, which the agent gathers into
// few stream writes, reaches the client one datagram per Read, whole and
// in order (an empty datagram and a large one among them).
func TestUDPBurstKeepsDatagramBoundaries(t *testing.T) {
	s := newTestServer(t, Options{})
	addr := serve(t, s)
	// Well within the agent socket's default receive buffer: UDP may
	// drop what overflows it, and this test is about boundaries.
	sizes := []int{1, 0, 1400, 7, 9000, 3, 512, 0, 30000, 2}
	for i := range 40 {
		sizes = append(sizes, i%64)
	}
	burst := func(i int) []byte {
		p := make([]byte, sizes[i])
		for j := range p {
			p[j] = byte(i + j)
		}
		return p
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	_ = pc.SetReadBuffer(4 << 20)
	go func() { // one datagram in, the burst out
		buf := make([]byte, 64<<10)
		_, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		for i := range sizes {
			_, _ = pc.WriteToUDPAddrPort(burst(i), from)
		}
	}()
	ctx, cl := dialTestClient(t, addr)
	c, err := cl.DialUDP(ctx, pc.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for i := range sizes {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v", i+1, len(sizes), err)
		}
		if want := burst(i); !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: %d bytes, want the %d sent", i+1, n, len(want))
		}
	}
}

// readWaiting takes the datagrams already queued on a socket without
// waiting, and says so when there are none.
func TestReadWaitingDoesNotWait(t *testing.T) {
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.DialUDP("udp", nil, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rc, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, ok := readWaiting(rc, buf); ok {
		t.Fatalf("read %d bytes from an empty socket", n)
	}
	for _, p := range []string{"one", "two"} {
		if _, err := b.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2; {
		if n, ok := readWaiting(rc, buf); ok {
			got = append(got, string(buf[:n]))
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %q of the two datagrams sent", got)
		}
		time.Sleep(time.Millisecond) // a bounded poll: loopback delivers at once in practice
	}
	if got[0] != "one" || got[1] != "two" {
		t.Fatalf("got %q, want [one two]", got)
	}
	if n, ok := readWaiting(rc, buf); ok {
		t.Fatalf("read %d bytes after the two datagrams", n)
	}
}
