package incoming

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// These tests drive the agent's incoming machinery in-process, on
// loopback: no nat rules (a fake portRules), connections handed to
// serveConn with the destination they "had". They keep what only the
// internals show (the refusal rules in full, lingering, HTTP framing, a
// mirror that never reads); steal and mirror as a client gets them, with
// real nat rules, are in subscribe_test.go.

type fakeRules struct {
	mu    sync.Mutex
	ports map[uint16]bool
	calls []string
}

func (f *fakeRules) Add(p uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ports[p] = true
	f.calls = append(f.calls, fmt.Sprintf("add %d", p))
	return nil
}

func (f *fakeRules) Remove(p uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ports, p)
	f.calls = append(f.calls, fmt.Sprintf("remove %d", p))
	return nil
}

func (f *fakeRules) has(p uint16) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ports[p]
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newTestIncoming(t *testing.T) (*Service, *fakeRules) {
	rules := &fakeRules{ports: map[uint16]bool{}}
	in := newService(testLogger(t), rules, Options{Linger: 5 * time.Second, OpenTimeout: 5 * time.Second, DialTimeout: 5 * time.Second})
	in.dial = func(ctx context.Context, dst netip.AddrPort) (*net.TCPConn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", dst.String())
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
	t.Cleanup(in.close)
	return in, rules
}

func steal(port uint16, owner string, f proto.HTTPFilter) proto.Subscribe {
	return proto.Subscribe{Mode: proto.ModeSteal, Port: port, Owner: owner, Label: owner + "@test", Filter: f}
}

func header(p string) proto.HTTPFilter { return proto.HTTPFilter{Kind: proto.FilterHeader, Pattern: p} }

func TestSubscriptionsShareAndRefuse(t *testing.T) {
	in, rules := newTestIncoming(t)
	in.reserved[7777] = "the agent's own tunnel port"
	ta, tb := &Peer{Remote: "a"}, &Peer{Remote: "b"}

	a, err := in.subscribe(ta, steal(80, "alice", header("x-user: alice")))
	if err != nil {
		t.Fatal(err)
	}
	b, err := in.subscribe(tb, steal(80, "bob", header("x-user: bob")))
	if err != nil {
		t.Fatalf("a second filtered steal of the port: %v", err)
	}
	if _, err := in.subscribe(tb, steal(80, "carol", proto.HTTPFilter{})); err == nil || !strings.Contains(err.Error(), `already stolen by alice@test (header "x-user: alice") and bob@test`) {
		t.Errorf("a whole steal of a filtered port: %v, want a refusal naming alice", err)
	}
	if _, err := in.subscribe(ta, proto.Subscribe{Mode: proto.ModeMirror, Port: 80, Owner: "dave"}); err != nil {
		t.Errorf("a mirror beside steals: %v", err)
	}
	whole, err := in.subscribe(ta, steal(81, "alice", proto.HTTPFilter{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.subscribe(tb, steal(81, "bob", header("x"))); err == nil || !strings.Contains(err.Error(), "stolen whole by alice@test") {
		t.Errorf("a filtered steal of a wholly stolen port: %v", err)
	}
	// The same owner again (a reconnection) takes its subscription over.
	again, err := in.subscribe(tb, steal(81, "alice", proto.HTTPFilter{}))
	if err != nil {
		t.Fatalf("the owner renewing its steal: %v", err)
	}
	if !whole.gone || in.route(81).stealAll != again {
		t.Error("the renewed subscription did not replace the old one")
	}
	if _, err := in.subscribe(ta, steal(7777, "alice", proto.HTTPFilter{})); err == nil || !strings.Contains(err.Error(), "the agent's own tunnel port") {
		t.Errorf("stealing the tunnel port: %v", err)
	}
	if _, err := in.subscribe(ta, steal(82, "alice", header("("))); err == nil || !strings.Contains(err.Error(), "not a valid regular expression") {
		t.Errorf("a bad filter: %v", err)
	}
	r := in.route(80)
	if len(r.steal) != 2 || r.steal[0] != a || r.steal[1] != b || len(r.mirrorAll) != 1 {
		t.Errorf("route of port 80 = %+v", r)
	}
	in.release(a)
	in.release(b)
	if !rules.has(80) {
		t.Error("the redirect went while the mirror still holds the port")
	}
	in.release(again)
	if rules.has(81) {
		t.Error("the redirect of port 81 outlived its last subscription")
	}
	in.close()
	if rules.has(80) || len(rules.ports) != 0 {
		t.Errorf("close left redirects: %v (calls %v)", rules.ports, rules.calls)
	}
	if _, err := in.subscribe(ta, steal(80, "alice", proto.HTTPFilter{})); err == nil {
		t.Error("a closed agent took a subscription")
	}
}

func TestLostTunnelLingers(t *testing.T) {
	in, rules := newTestIncoming(t)
	req := steal(80, "alice", proto.HTTPFilter{})
	req.Linger = 200 * time.Millisecond
	s, err := in.subscribe(&Peer{Remote: "a"}, req)
	if err != nil {
		t.Fatal(err)
	}
	in.detach(s)
	if !in.route(80).empty() {
		t.Error("a lingering subscription still takes connections; they must go to the pod's app")
	}
	if _, err := in.subscribe(&Peer{Remote: "b"}, steal(80, "bob", proto.HTTPFilter{})); err == nil {
		t.Error("another client took a port that is held for its owner")
	}
	// The owner comes back in time.
	back, err := in.subscribe(&Peer{Remote: "a2"}, req)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if !rules.has(80) || in.route(80).stealAll != back {
		t.Fatal("the renewed subscription was dropped with the old one")
	}
	in.detach(back)
	deadline := time.Now().Add(2 * time.Second)
	for rules.has(80) {
		if time.Now().After(deadline) {
			t.Fatal("the redirect outlived the linger time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClientLingerIsCapped(t *testing.T) {
	in, rules := newTestIncoming(t)
	in.maxLinger = 200 * time.Millisecond
	req := steal(80, "alice", proto.HTTPFilter{})
	req.Linger = 365 * 24 * time.Hour // a client that would hold the port for a year
	s, err := in.subscribe(&Peer{Remote: "a", Log: testLogger(t)}, req)
	if err != nil {
		t.Fatal(err)
	}
	in.detach(s) // its tunnel is lost
	deadline := time.Now().Add(10 * time.Second)
	for rules.has(80) {
		if time.Now().After(deadline) {
			t.Fatalf("the port is still redirected for a lost client 10s after the agent's cap of %s", in.maxLinger)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testClient is the client end of a tunnel: it answers the agent's
// Incoming streams by serving HTTP itself ("TAG METHOD PATH"), or for a
// mirror by never reading the copies.
type testClient struct {
	t *Peer
}

func newTestClient(t *testing.T, tag string, mode proto.IncomingMode) *testClient {
	t.Helper()
	return newTestClientWindow(t, tag, mode, proto.StreamWindow)
}

// newTestClientWindow is newTestClient whose yamux takes at most window
// bytes of a stream unread (yamux's least is 256 KiB).
func newTestClientWindow(t *testing.T, tag string, mode proto.IncomingMode, window uint32) *testClient {
	t.Helper()
	if mode == proto.ModeMirror {
		return newTestClientServing(t, tag, mode, window, nil)
	}
	return newTestClientServing(t, tag, mode, window, func(ln net.Listener) {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s %s %s %d", tag, r.Method, r.URL.Path, n)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	})
}

// newTestClientServing is a client whose app is serve, given the
// client's streams as a listener; a nil serve never reads (a mirror that
// does not keep up). Its yamux takes at most window bytes of a stream
// unread.
func newTestClientServing(t testing.TB, tag string, mode proto.IncomingMode, window uint32, serve func(net.Listener)) *testClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	agentSess, err := proto.ServerSession(ac, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := proto.MuxConfig(nil)
	cfg.MaxStreamWindowSize = window
	clientSess, err := yamux.Client(cc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clientSess.Close(); agentSess.Close() })
	tc := &testClient{t: &Peer{Log: testLogger(t), Session: agentSess, Remote: tag}}
	conns := &streamListener{conns: make(chan net.Conn), addr: cc.LocalAddr(), closed: make(chan struct{})}
	if serve != nil {
		serve(conns)
	}
	go func() {
		for {
			st, err := clientSess.AcceptStream()
			if err != nil {
				return
			}
			m, err := proto.ReadMessage(st)
			if err != nil {
				st.Close()
				continue
			}
			if in, ok := m.(proto.Incoming); !ok || in.Mode != mode {
				t.Errorf("the agent sent %#v, want Incoming for %s", m, mode)
			}
			proto.WriteMessage(st, proto.Result{})
			if serve == nil {
				continue // a client that never reads its copies
			}
			select {
			case conns.conns <- st:
			case <-conns.closed:
				st.Close()
			}
		}
	}()
	return tc
}

type streamListener struct {
	conns  chan net.Conn
	addr   net.Addr
	once   sync.Once
	closed chan struct{}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, errors.New("closed")
	}
}

func (l *streamListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *streamListener) Addr() net.Addr { return l.addr }

// podApp is the pod's own app on loopback: HTTP ("pod METHOD PATH N"), or
// with handle set, a raw TCP server.
func podApp(t *testing.T, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if handle == nil {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "pod %s %s %d", r.Method, r.URL.Path, n)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	} else {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					handle(c)
				}()
			}
		}()
	}
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// connect makes a connection "to dst" that the agent serves as if the nat
// rules had redirected it, and returns the peer's end.
func connect(t *testing.T, in *Service, dst netip.AddrPort) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		in.serveConn(ctx, ac.(*net.TCPConn), c.LocalAddr().(*net.TCPAddr).AddrPort(), dst)
	}()
	t.Cleanup(func() { c.Close(); cancel(); <-done })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// roundTrip writes raw and reads as many responses as it holds requests.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string, methods ...string) []string {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range methods {
		res, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("reading the answer to %s: %v", m, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		out = append(out, fmt.Sprintf("%d %s", res.StatusCode, b))
	}
	return out
}

func TestHTTPFilterDecidesEachRequest(t *testing.T) {
	in, _ := newTestIncoming(t)
	pod := podApp(t, nil)
	alice := newTestClient(t, "alice", proto.ModeSteal)
	bob := newTestClient(t, "bob", proto.ModeSteal)
	if _, err := in.subscribe(alice.t, steal(pod.Port(), "alice", header("^x-user: alice$"))); err != nil {
		t.Fatal(err)
	}
	if _, err := in.subscribe(bob.t, steal(pod.Port(), "bob", proto.HTTPFilter{Kind: proto.FilterPath, Pattern: "^/bob"})); err != nil {
		t.Fatal(err)
	}
	c := connect(t, in, pod)
	br := bufio.NewReader(c)
	check := func(raw string, methods []string, want ...string) {
		t.Helper()
		got := roundTrip(t, c, br, raw, methods...)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("answers %q, want %q", got, want)
		}
	}
	check("GET /a HTTP/1.1\r\nHost: p\r\nX-User: alice\r\n\r\n", []string{"GET"}, "200 alice GET /a 0")
	check("GET /b HTTP/1.1\r\nHost: p\r\n\r\n", []string{"GET"}, "200 pod GET /b 0")
	check("GET /bob/x HTTP/1.1\r\nHost: p\r\n\r\n", []string{"GET"}, "200 bob GET /bob/x 0")
	// Chunked bodies, both ways of the split.
	check("POST /c HTTP/1.1\r\nHost: p\r\nx-user: alice\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", []string{"POST"}, "200 alice POST /c 5")
	check("POST /d HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\n\r\nwxyz", []string{"POST"}, "200 pod POST /d 4")
	// Pipelined requests to different backends come back in order.
	check("GET /1 HTTP/1.1\r\nHost: p\r\n\r\nGET /2 HTTP/1.1\r\nHost: p\r\nX-User: alice\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: p\r\n\r\nGET /4 HTTP/1.1\r\nHost: p\r\n\r\n",
		[]string{"GET", "GET", "HEAD", "GET"}, "200 pod GET /1 0", "200 alice GET /2 0", "200 ", "200 pod GET /4 0")
	// Expect: 100-continue: the body is sent once the backend asks for it.
	if _, err := io.WriteString(c, "PUT /e HTTP/1.1\r\nHost: p\r\nX-User: alice\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "100 Continue") {
		t.Fatalf("want 100 Continue before the body, got %q, %v", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	check("123", []string{"PUT"}, "200 alice PUT /e 3")
}

func TestFilteredPortPassesOtherProtocolsWhole(t *testing.T) {
	in, _ := newTestIncoming(t)
	echo := podApp(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(c, "echo %s", line)
		}
	})
	greeter := podApp(t, func(c net.Conn) {
		fmt.Fprintf(c, "220 hello from the pod\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "250 %s", line)
	})
	alice := newTestClient(t, "alice", proto.ModeSteal)
	for _, p := range []uint16{echo.Port(), greeter.Port()} {
		if _, err := in.subscribe(alice.t, steal(p, "alice", header("x-user: alice"))); err != nil {
			t.Fatal(err)
		}
	}
	c := connect(t, in, echo)
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "hello raw\nPOST / HTTP/1.1\n")
	for _, want := range []string{"echo hello raw\n", "echo POST / HTTP/1.1\n"} {
		if got, err := br.ReadString('\n'); got != want {
			t.Errorf("raw TCP through a filtered port: %q, %v; want %q", got, err, want)
		}
	}
	// A protocol where the server speaks first must not wait for the client.
	g := connect(t, in, greeter)
	gr := bufio.NewReader(g)
	if got, err := gr.ReadString('\n'); got != "220 hello from the pod\r\n" {
		t.Fatalf("server-first greeting: %q, %v", got, err)
	}
	fmt.Fprintf(g, "EHLO me\n")
	if got, _ := gr.ReadString('\n'); got != "250 EHLO me\n" {
		t.Errorf("server-first exchange: %q", got)
	}
}

func TestSlowMirrorNeverSlowsThePod(t *testing.T) {
	in, _ := newTestIncoming(t)
	sink := podApp(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "got %d\n", n)
	})
	stuck := newTestClient(t, "stuck", proto.ModeMirror)
	if _, err := in.subscribe(stuck.t, proto.Subscribe{Mode: proto.ModeMirror, Port: sink.Port(), Owner: "s"}); err != nil {
		t.Fatal(err)
	}
	c := connect(t, in, sink)
	const total = 32 << 20 // more than the stream window and the tap queue
	buf := make([]byte, 1<<20)
	for sent := 0; sent < total; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("the pod's path stalled behind a mirror that does not read: %v", err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != fmt.Sprintf("got %d\n", total) {
		t.Fatalf("the pod's app got %q, %v", line, err)
	}
	if in.mirrorDrops.Load() == 0 {
		t.Error("the copy that could not keep up was not counted as dropped")
	}
}

// stuckWindow is what the client of mirrorTo takes of a copy unread.
const stuckWindow = 256 << 10

// mirrorTo subscribes a client that never reads its copies to mirror a
// pod app that swallows everything, and returns the app's address and the
// bytes it got so far.
func mirrorTo(t *testing.T, in *Service) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	var got atomic.Int64
	sink := podApp(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		got.Add(n)
	})
	stuck := newTestClientWindow(t, "stuck", proto.ModeMirror, stuckWindow)
	if _, err := in.subscribe(stuck.t, proto.Subscribe{Mode: proto.ModeMirror, Port: sink.Port(), Owner: "s"}); err != nil {
		t.Fatal(err)
	}
	return sink, &got
}

// waitFor polls cond, bounded; what describes the state when it fails.
func waitFor(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
	}
}

func TestMirrorQueueIsCappedPerSubscriberNotPerConnection(t *testing.T) {
	in, _ := newTestIncoming(t)
	sink, _ := mirrorTo(t, in)
	// Past what the client takes unread, each connection leaves less than
	// the cap with the agent; together they pass it.
	const conns, each = 8, 2 << 20
	buf := make([]byte, each)
	for range conns {
		c := connect(t, in, sink)
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("the pod's path stalled behind a mirror that does not read: %v", err)
		}
	}
	waitFor(t, func() bool { return in.mirrorDrops.Load() > 0 }, func() string {
		return fmt.Sprintf("%d MiB mirrored to a client that reads nothing, in %d connections, and no copy was dropped: the %d MiB cap is per connection",
			conns*each>>20, conns, maxTapQueue>>20)
	})
	for _, sub := range in.ports[sink.Port()] {
		if held := sub.mirrorHeld.Load(); held > maxTapQueue {
			t.Errorf("%s holds %d bytes of copies, over the cap of %d", sub, held, maxTapQueue)
		}
	}
}

func TestStalledMirrorCopiesAreClosed(t *testing.T) {
	in, _ := newTestIncoming(t)
	in.mirrorStall = 200 * time.Millisecond
	sink, got := mirrorTo(t, in)
	const conns, each = 4, 2 << 20 // more than the client takes unread
	for range conns {
		c := connect(t, in, sink)
		if _, err := c.Write(make([]byte, each)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// The pod's app has it all: the connections ended, their copies did not.
	waitFor(t, func() bool { return got.Load() == conns*each }, func() string {
		return fmt.Sprintf("the pod's app got %d bytes, want %d", got.Load(), conns*each)
	})
	waitFor(t, func() bool { return in.mirrorCopies.Load() == 0 }, func() string {
		return fmt.Sprintf("%d mirror copies to a client that reads nothing are still kept after their connections ended", in.mirrorCopies.Load())
	})
	for _, sub := range in.ports[sink.Port()] {
		if held := sub.mirrorHeld.Load(); held != 0 {
			t.Errorf("%s still counts %d bytes of copies that ended", sub, held)
		}
	}
}
