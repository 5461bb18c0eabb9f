package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/splice"
)

func TestDialHandshakesAndReportsPodFacts(t *testing.T) {
	t.Parallel()
	rc := writeFile(t, "resolv.conf", "search ns1.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.53\noptions ndots:5 attempts:2\n")
	a := startAgent(t, agent.Options{ResolvConfPath: rc})
	c := dial(t, a.Addr(), client.Options{})
	f := c.Facts()
	host, _ := os.Hostname()
	if f.Hostname != host || f.Ndots != 5 || strings.Join(f.SearchDomains, ",") != "ns1.svc.cluster.local,svc.cluster.local,cluster.local" ||
		strings.Join(f.Options, ",") != "attempts:2" {
		t.Errorf("Facts() = %+v", f)
	}
	if d, err := c.Ping(ctxTimeout(t, 5*time.Second)); err != nil || d <= 0 {
		t.Errorf("Ping = %s, %v", d, err)
	}
}

func TestDialFailsWhenTheAgentRefusesTheToken(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	_, err := client.Dial(context.Background(), client.Options{Address: a.Addr(), Token: "wrong", CommunicationTimeout: 5 * time.Second})
	if !errors.Is(err, client.ErrTokenRefused) || !strings.Contains(err.Error(), "agent refused the token") {
		t.Fatalf("Dial with a wrong token = %v, want ErrTokenRefused", err)
	}
}

func TestDialNeedsAddressAndToken(t *testing.T) {
	t.Parallel()
	if _, err := client.Dial(context.Background(), client.Options{Token: "x"}); err == nil || !strings.Contains(err.Error(), "Address is empty") {
		t.Errorf("no address: %v", err)
	}
	if _, err := client.Dial(context.Background(), client.Options{Address: "127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "Token is empty") {
		t.Errorf("no token: %v", err)
	}
	if _, err := client.Dial(context.Background(), client.Options{Address: "127.0.0.1:1", Token: "x", CommunicationTimeout: -1}); err == nil ||
		!strings.Contains(err.Error(), "CommunicationTimeout -1ns is negative") {
		t.Errorf("negative timeout: %v", err)
	}
}

func TestDialUsesTheGivenDialer(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	used := false
	c, err := client.Dial(context.Background(), client.Options{Token: testToken, Dialer: func(ctx context.Context) (net.Conn, error) {
		used = true
		var d net.Dialer
		return d.DialContext(ctx, "tcp", a.Addr())
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !used {
		t.Error("the Dialer was not used")
	}
}

func TestDialTCPReachesTheServerAndHalfClosePassesThrough(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	dst := tcpEchoServer(t)
	conn, err := c.DialTCP(ctxTimeout(t, 5*time.Second), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.RemoteAddr().String() != dst.String() {
		t.Errorf("RemoteAddr = %s, want %s", conn.RemoteAddr(), dst)
	}
	msg := bytes.Repeat([]byte("uwu "), 100000)
	go func() {
		_, _ = conn.Write(msg)
		_ = conn.(interface{ CloseWrite() error }).CloseWrite()
	}()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(conn) // the echo server closes after our FIN
	if err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo: got %d bytes, want %d", len(got), len(msg))
	}
}

func TestDialTCPToAClosedPortIsRefused(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	_, err = c.DialTCP(ctxTimeout(t, 5*time.Second), closed)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("DialTCP to a closed port = %v, want ECONNREFUSED", err)
	}
	var re *client.RemoteError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %v is not a RemoteError with the agent's message", err)
	}
}

// fullListener is a loopback TCP listener whose accept queue is full, so
// the kernel drops further SYNs: a dial to it times out.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*syscall.SockaddrInet4).Port))
	for range 4 { // fill the queue; the later ones time out themselves
		if c, err := net.DialTimeout("tcp", ap.String(), 200*time.Millisecond); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return ap
}

func TestDialTCPToASilentPortTimesOut(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	dst := fullListener(t)
	// The deadline is the caller's; the agent bounds its own dial by what
	// is left of it, so the timeout may come from either end.
	result := make(chan error, 1)
	go func() {
		conn, err := c.DialTCP(ctxTimeout(t, 700*time.Millisecond), dst)
		if err == nil {
			conn.Close()
		}
		result <- err
	}()
	select {
	case err := <-result:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("DialTCP to a port that drops SYNs = %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("DialTCP with a 700ms deadline had not returned after 30s")
	}
}

func TestPeerResetReachesTheApp(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 1)
		_, _ = s.Read(buf)
		_ = s.(*net.TCPConn).SetLinger(0) // close with RST
		_ = s.Close()
	}()
	conn, err := c.DialTCP(ctxTimeout(t, 5*time.Second), netip.MustParseAddrPort(ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 10))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after the peer's RST = %v, want ECONNRESET", err)
	}
}

func TestAppCloseClosesThePodSideSocket(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		// The server talks without pause: the app's close must still
		// reach it, and the agent must not stay stuck sending to it.
		go func() {
			for {
				if _, err := s.Write(make([]byte, 32<<10)); err != nil {
					return
				}
			}
		}()
		// As with a kernel socket closed while data is still arriving,
		// the end may come as a FIN or as a reset; it must come.
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b []byte
		buf := make([]byte, 16)
		for {
			n, err := s.Read(buf)
			b = append(b, buf[:n]...)
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				got <- string(b)
				return
			}
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
		}
	}()
	conn, err := c.DialTCP(ctxTimeout(t, 5*time.Second), netip.MustParseAddrPort(ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "bye" {
		t.Fatalf("the server read %q, want %q then the end of the connection", s, "bye")
	}
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close = %v, want net.ErrClosed", err)
	}
}

func TestLoopbackDestinationIsThePodsOwnLoopback(t *testing.T) {
	t.Parallel()
	// The agent runs in this process's namespace here, so the pod's
	// loopback is ours: a listener on 127.0.0.1 stands in for a sidecar.
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	sidecar := tcpEchoServer(t)
	conn, err := c.DialTCP(ctxTimeout(t, 5*time.Second), sidecar)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoOnce(t, conn, "ping sidecar")
}

func echoOnce(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

func TestDialUDPRoundTripKeepsDatagrams(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	dst := udpEchoServer(t)
	conn, err := c.DialUDP(ctxTimeout(t, 5*time.Second), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	sizes := []int{1, 0, 1200, 9000, 65000}
	for _, n := range sizes {
		if _, err := conn.Write(bytes.Repeat([]byte{byte(n)}, n)); err != nil {
			t.Fatalf("write %d bytes: %v", n, err)
		}
	}
	buf := make([]byte, 65535)
	for _, want := range sizes {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n != want || (n > 0 && buf[0] != byte(want)) {
			t.Fatalf("datagram of %d bytes, want %d", n, want)
		}
	}
	// A short buffer truncates the datagram, as a UDP socket does, and
	// the next datagram is still whole.
	if _, err := conn.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("next")); err != nil {
		t.Fatal(err)
	}
	small := make([]byte, 4)
	if n, err := conn.Read(small); err != nil || string(small[:n]) != "0123" {
		t.Fatalf("truncated read = %q, %v", small[:n], err)
	}
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "next" {
		t.Fatalf("next read = %q, %v", buf[:n], err)
	}
	// A read deadline with nothing to read leaves the flow usable.
	_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := conn.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("read after a deadline = %q, %v", buf[:n], err)
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	dst := tcpEchoServer(t)
	const flows = 500
	var wg sync.WaitGroup
	errs := make(chan error, flows)
	conns := make(chan net.Conn, flows)
	for i := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.DialTCP(ctxTimeout(t, 30*time.Second), dst)
			if err != nil {
				errs <- fmt.Errorf("flow %d: dial: %w", i, err)
				return
			}
			conns <- conn // all stay open at once
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			msg := fmt.Sprintf("flow %d says hello", i)
			if _, err := conn.Write([]byte(msg)); err != nil {
				errs <- fmt.Errorf("flow %d: write: %w", i, err)
				return
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != msg {
				errs <- fmt.Errorf("flow %d: echo %q: %v", i, buf, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(conns)
	for err := range errs {
		t.Error(err)
	}
	n := 0
	for conn := range conns {
		n++
		conn.Close()
	}
	if n != flows {
		t.Errorf("%d of %d flows opened", n, flows)
	}
}

func TestAgentRestartReconnects(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	addr := a.Addr() // a restarted agent listens there again
	states := make(chan client.State, 10)
	// The test decides when the agent can be reached again, so that a dial
	// is known to wait before the tunnel can come back.
	var reachable atomic.Bool
	reachable.Store(true)
	c := dial(t, addr, client.Options{
		CommunicationTimeout: 10 * time.Second,
		OnState:              func(s client.State, _ error) { states <- s },
		Dialer: func(ctx context.Context) (net.Conn, error) {
			if !reachable.Load() {
				return nil, fmt.Errorf("the test keeps the agent unreachable: %w", syscall.ECONNREFUSED)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	})
	dst := tcpEchoServer(t)
	open, err := c.DialTCP(ctxTimeout(t, 5*time.Second), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	echoOnce(t, open, "before")

	reachable.Store(false)
	a.Stop()
	// The open flow ends as a reset, as the router expects.
	_ = open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := open.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Read on a flow whose tunnel dropped = %v, want ECONNRESET", err)
	}
	if s := waitState(t, states); s != client.StateReconnecting {
		t.Fatalf("first state after the agent died = %s, want reconnecting", s)
	}

	// A dial made while the agent is down waits for it to return.
	waiting := make(chan struct{})
	ctx := &doneProbe{Context: ctxTimeout(t, 30*time.Second), called: waiting}
	result := make(chan error, 1)
	go func() {
		conn, err := c.DialTCP(ctx, dst)
		if err == nil {
			conn.Close()
		}
		result <- err
	}()
	select {
	case <-waiting:
	case err := <-result:
		t.Fatalf("a dial while the agent was down returned (%v) instead of waiting for it", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the dial did not start waiting within 10s")
	}
	a.Restart()
	reachable.Store(true)
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("a dial waiting for the reconnection failed: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting dial did not complete within 20s of the agent's return")
	}
	if s := waitState(t, states); s != client.StateConnected {
		t.Fatalf("state after the agent returned = %s, want connected", s)
	}
	conn, err := c.DialTCP(ctxTimeout(t, 5*time.Second), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoOnce(t, conn, "after")
}

// doneProbe is a context that closes called the first time someone asks
// for its Done channel: a dial that honours its context asks for it when
// it starts to wait, and not before, since it has no tunnel to use.
type doneProbe struct {
	context.Context
	once   sync.Once
	called chan struct{}
}

func (p *doneProbe) Done() <-chan struct{} {
	p.once.Do(func() { close(p.called) })
	return p.Context.Done()
}

func waitState(t *testing.T, states <-chan client.State) client.State {
	t.Helper()
	select {
	case s := <-states:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no state change within 10s")
		return 0
	}
}

func TestDialFailsCleanlyWhenTheAgentStaysAway(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{CommunicationTimeout: 500 * time.Millisecond})
	a.Stop()
	// ErrAgentUnavailable comes only once CommunicationTimeout has passed
	// without a tunnel (the caller's context has no deadline).
	_, err := c.DialTCP(context.Background(), netip.MustParseAddrPort("127.0.0.1:9"))
	if !errors.Is(err, client.ErrAgentUnavailable) || !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("DialTCP with no agent = %v, want ErrAgentUnavailable and EHOSTUNREACH", err)
	}
	if !strings.Contains(err.Error(), "for 500ms") {
		t.Errorf("DialTCP with no agent = %v, want it to name the 500ms it waited", err)
	}
	// The caller's own deadline wins when it is shorter.
	_, err = c.Exchange(ctxTimeout(t, 50*time.Millisecond), []byte{0})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Exchange with a short deadline and no agent = %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestClosedClientFailsDials(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	c.Close()
	if _, err := c.DialTCP(context.Background(), netip.MustParseAddrPort("127.0.0.1:9")); !errors.Is(err, client.ErrClosed) {
		t.Errorf("DialTCP after Close = %v, want ErrClosed", err)
	}
}

// TestCloseLeavesNoGoroutines runs alone (not parallel), so that every
// tunnel goroutine in the process is this test's.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	tcpDst, udpDst := tcpEchoServer(t), udpEchoServer(t)
	tcp, err := c.DialTCP(ctxTimeout(t, 5*time.Second), tcpDst)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, tcp, "tcp")
	udp, err := c.DialUDP(ctxTimeout(t, 5*time.Second), udpDst)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, udp, "udp")
	// Left open on purpose: Close must end them too.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	a.Stop()
	var left []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if left = tunnelGoroutines(); len(left) == 0 {
			return
		}
	}
	t.Fatalf("%d goroutines of the tunnel outlived Close:\n%s", len(left), strings.Join(left, "\n\n"))
}

// TestIdleTCPFlowsEnd checks the ends of a flow whose pod→client
// direction is parked in the agent's epoll set (no goroutine): the socket
// the agent closes leaves that set without an event, so the close itself
// must wake the direction. Not parallel, so that the goroutines it counts
// are its own.
func TestIdleTCPFlowsEnd(t *testing.T) {
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	dst := tcpEchoServer(t)
	open := func(msg string) net.Conn {
		conn, err := c.DialTCP(ctxTimeout(t, 5*time.Second), dst)
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, conn, msg)
		return conn
	}
	byApp := open("closed by the app")
	_ = open("closed with the tunnel")
	if n := goroutines("agent.(*tcpFlow).relay"); n != 2 {
		t.Fatalf("%d TCP flows in the agent, want 2", n)
	}
	waitFor(t, "the flows to idle (no copying goroutine)", func() bool { return goroutines("splice.(*notified).run") == 0 })

	// The app closes its connection: the agent closes the pod-side socket
	// and the flow ends.
	_ = byApp.Close()
	waitFor(t, "the app's close to end its flow", func() bool { return goroutines("agent.(*tcpFlow).relay") == 1 })

	// The tunnel goes: the agent resets the other.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the tunnel's close to end its flow", func() bool { return goroutines("agent.(*tcpFlow).relay") == 0 })
}

// goroutines counts the goroutines with frame in their stack.
func goroutines(frame string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, frame) {
			n++
		}
	}
	return n
}

// waitFor polls cond (bounded) until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("gave up waiting for %s", what)
}

func tunnelGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "trafficpolice/agent/client.") || strings.Contains(g, "trafficpolice/agent.") ||
			strings.Contains(g, "hashicorp/yamux.") || strings.Contains(g, "trafficpolice/agent/mux.") {
			out = append(out, g)
		}
	}
	return out
}

func TestUDPFlowEndsWhenIdle(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{UDPIdleTimeout: time.Second})
	c := dial(t, a.Addr(), client.Options{})
	conn, err := c.DialUDP(ctxTimeout(t, 5*time.Second), udpEchoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The flow works first: the end that follows is the agent's idle
	// timer, not a flow that never started.
	echoOnce(t, conn, "still here")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 10)); !errors.Is(err, io.EOF) {
		t.Fatalf("Read on an idle flow = %v, want io.EOF once the agent ends it", err)
	}
}

func TestAgentDropsAClientsFlowsWhenItsTunnelCloses(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c, err := client.Dial(context.Background(), client.Options{Address: a.Addr(), Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ended := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			ended <- err
			return
		}
		defer s.Close()
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, s)
		ended <- err
	}()
	conn, err := c.DialTCP(ctxTimeout(t, 5*time.Second), netip.MustParseAddrPort(ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	c.Close() // the whole tunnel goes, without closing the flow first
	if err := <-ended; err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the pod-side connection did not end with the tunnel: %v", err)
	}
}

// TestFlowParkedInItsNotifierSeesDataAndTheReset: the router parks an idle
// flow's direction from the pod in the conn's Notifier (no goroutine);
// the pod's data, then its peer's reset, must each wake it.
func TestFlowParkedInItsNotifierSeesDataAndTheReset(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	send, reset := make(chan struct{}), make(chan struct{})
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		<-send
		_, _ = s.Write([]byte("hello"))
		<-reset
		_ = s.(*net.TCPConn).SetLinger(0) // close with RST
	}()
	conn, err := c.DialTCP(ctxTimeout(t, 5*time.Second), netip.MustParseAddrPort(ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n, ok := conn.(splice.Notifier)
	if !ok {
		t.Fatalf("%T is no splice.Notifier", conn)
	}
	if n.Readable() {
		t.Fatal("readable before the pod sent anything")
	}
	pr, pw := io.Pipe()
	ended := make(chan error, 1)
	if _, err := splice.CopyNotified(pw, conn, n, func(_ int64, err error) { ended <- err; pw.Close() }); err != nil {
		t.Fatal(err)
	}
	close(send)
	buf := make([]byte, 5)
	if _, err := io.ReadFull(pr, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("copied %q, %v; want hello", buf, err)
	}
	close(reset)
	select {
	case err := <-ended:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("direction ended with %v, want ECONNRESET", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the parked direction did not see the reset")
	}
}

// TestDialUDPWriteBatchKeepsDatagrams: a batch goes in one write, and the
// pod's socket sends each datagram on its own; an oversized one refuses
// the whole batch before anything is sent.
func TestDialUDPWriteBatchKeepsDatagrams(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agent.Options{})
	c := dial(t, a.Addr(), client.Options{})
	conn, err := c.DialUDP(ctxTimeout(t, 5*time.Second), udpEchoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bw, ok := conn.(interface {
		WriteBatch([][]byte) (int, error)
	})
	if !ok {
		t.Fatalf("%T has no WriteBatch", conn)
	}
	if _, err := bw.WriteBatch([][]byte{[]byte("never"), make([]byte, 70000)}); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("batch with a 70000-byte datagram: %v, want EMSGSIZE", err)
	}
	batch := [][]byte{[]byte("one"), {}, bytes.Repeat([]byte{'z'}, 9000), []byte("four")}
	if n, err := bw.WriteBatch(batch); err != nil || n != 9007 {
		t.Fatalf("WriteBatch = %d, %v; want 9007 bytes of datagrams", n, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 65535)
	for _, want := range batch {
		n, err := conn.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("echo of a %d-byte datagram: %d bytes, %v", len(want), n, err)
		}
	}
}
