package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// stallingPeer connects to addr as a client that never finishes its Hello:
// it starts a yamux session, opens a first stream on which it says
// nothing, then opens streams and fills each with 256 KiB (yamux's initial
// window), and pings the agent so that everything it sent has been read.
// It returns the connection, to be closed by the test.
func stallingPeer(t *testing.T, addr string, streams int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = discard{}
	sess, err := yamux.Client(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.OpenStream(); err != nil { // the "control stream": silent
		return c
	}
	fill := make([]byte, 256<<10)
	for range streams {
		st, err := sess.OpenStream()
		if err != nil {
			return c // the agent hung up: nothing is buffered
		}
		_ = st.SetWriteDeadline(time.Now().Add(20 * time.Second))
		if _, err := st.Write(fill); err != nil {
			return c
		}
	}
	// yamux handles frames in order: once the ping is answered, the agent
	// has taken in every byte sent before it.
	_, _ = sess.Ping()
	return c
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// serve runs s on a loopback port until the test ends.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// slowHello connects and sends half of a Hello whose header promises the
// largest body the agent takes, then nothing more.
func slowHello(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, proto.HeaderSize+proto.MaxHelloSize/2)
	b[0] = byte(proto.TypeHello)
	binary.BigEndian.PutUint32(b[1:], proto.MaxHelloSize)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitPending waits until n connections hold a place for their handshake.
func waitPending(t *testing.T, s *Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); len(s.pending) != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections wait for their handshake, want %d", len(s.pending), n)
		}
	}
}

func newTestServer(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.Token = "s3cret"
	opts.ResolvConfPath = writeTemp(t, "resolv.conf", "")
	opts.Logger = slog.New(slog.DiscardHandler)
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dialTestClient connects a client with the test token; the client and the
// context it returns end with the test.
func dialTestClient(t *testing.T, addr string) (context.Context, *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	cl, err := client.Dial(ctx, client.Options{Address: addr, Token: "s3cret", CommunicationTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return ctx, cl
}

func dialClient(t *testing.T, addr string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, client.Options{Address: addr, Token: "s3cret", CommunicationTimeout: 10 * time.Second})
	if err == nil {
		cl.Close()
	}
	return err
}

// Peers that open streams and never finish the Hello, or trickle a Hello,
// must not make the agent buffer more than the Hello's bytes for them; a
// real client still gets in while they hang.
func TestUnauthenticatedPeersCannotGrowTheHeap(t *testing.T) {
	s := newTestServer(t, Options{HandshakeTimeout: time.Minute})
	addr := serve(t, s)
	before := heapInUse()
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := stallingPeer(t, addr, 8)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	const slow = MaxPendingHandshakes - 1
	for range slow {
		conns = append(conns, slowHello(t, addr))
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	waitPending(t, s, slow)
	grown := int64(heapInUse()) - int64(before)
	t.Logf("agent heap grew by %d KiB for %d peers", grown>>10, len(conns))
	if grown > 32<<20 {
		t.Errorf("the heap grew by %d MiB for %d peers that never finished their Hello, want under 32 MiB", grown>>20, len(conns))
	}
	if err := dialClient(t, addr); err != nil {
		t.Fatalf("a real client could not connect while the peers hang: %v", err)
	}
}

// Beyond MaxPendingHandshakes, a new connection is closed at once; when a
// place frees up, clients get in again.
func TestUnauthenticatedConnectionsAreCapped(t *testing.T) {
	s := newTestServer(t, Options{HandshakeTimeout: time.Minute})
	addr := serve(t, s)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range MaxPendingHandshakes {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitPending(t, s, MaxPendingHandshakes)
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	// The handshake timeout is a minute: only the cap closes it sooner.
	_ = extra.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection %d: read %d bytes, %v; want it closed at once", MaxPendingHandshakes+1, n, err)
	}
	if err := dialClient(t, addr); err == nil {
		t.Fatal("a client got in while every place was taken")
	}
	conns[0].Close()
	waitPending(t, s, MaxPendingHandshakes-1)
	if err := dialClient(t, addr); err != nil {
		t.Fatalf("a client could not connect once a place was free: %v", err)
	}
}

// A peer that says nothing is dropped after HandshakeTimeout.
func TestSilentPeerIsDroppedAfterTheHandshakeTimeout(t *testing.T) {
	s := newTestServer(t, Options{HandshakeTimeout: 100 * time.Millisecond, CommunicationTimeout: time.Minute})
	addr := serve(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %d bytes, %v; want the agent to hang up", n, err)
	}
	waitPending(t, s, 0)
}

// A client of protocol version 2 starts yamux first: the agent says so in
// its log and hangs up.
func TestYamuxFirstClientIsToldToUpgrade(t *testing.T) {
	addr, logs := startServer(t, Options{Token: "s3cret", ResolvConfPath: writeTemp(t, "resolv.conf", "")})
	c := stallingPeer(t, addr, 0)
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "upgrade trafficpolice"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent's log does not tell an old client apart:\n%s", logs.String())
		}
	}
}

// failingListener returns EMFILE from its first Accepts, then the real
// listener's connections.
type failingListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// Running out of file descriptors is a moment, not the end of the agent.
func TestAcceptOutOfFileDescriptorsKeepsServing(t *testing.T) {
	s := newTestServer(t, Options{})
	real, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{Listener: real, fails: 3}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	derr := dialClient(t, real.Addr().String())
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve ended with %v after EMFILE from Accept, want it to keep serving", err)
	}
	if derr != nil {
		t.Errorf("a client could not connect after the agent ran out of descriptors: %v", derr)
	}
}
