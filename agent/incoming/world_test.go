package incoming_test

// The world of the tests that drive incoming traffic through public APIs
// only: a "pod" network namespace holding a real agent (agent.New and
// Serve, with incoming traffic on and real nat rules) and the pod's own
// apps; a "peer" namespace joined to the pod by a veth, which calls the
// pod's ports from outside and carries the clients' tunnels; and clients
// (client.Dial, Subscribe) in the test process, whose local apps listen
// on the host's loopback.
//
// The agent runs as a process of its own (this test binary, started
// again from a thread inside the pod's namespace), not as goroutines of
// the test: a goroutine locked in a namespace does not take the
// goroutines it starts along, and the agent writes its rules (iptables
// binaries, nftables netlink) and dials the pod's app from goroutines of
// its tunnels, which would do so in the host's namespace. A process
// started inside the namespace is there with every thread, as an agent is
// in its pod.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/trafficpolice/trafficpolice/agent"
	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// The agent process reads its settings from these variables; the first
// one set makes the test binary an agent instead of running tests.
const (
	agentBackendEnv = "TRAFFICPOLICE_INCOMING_TEST_AGENT_BACKEND"
	agentListenEnv  = "TRAFFICPOLICE_INCOMING_TEST_AGENT_LISTEN"
	agentTokenEnv   = "TRAFFICPOLICE_INCOMING_TEST_AGENT_TOKEN"
)

// Addresses of the veth between peer and pod: documentation ranges
// (TEST-NET-1, 2001:db8::/32), only ever inside the test's namespaces.
var (
	podAddr4  = netip.MustParseAddr("192.0.2.2")
	peerAddr4 = netip.MustParseAddr("192.0.2.1")
	podAddr6  = netip.MustParseAddr("2001:db8::2")
	peerAddr6 = netip.MustParseAddr("2001:db8::1")
)

// waitLimit bounds every wait of these tests for something that should
// happen at once: passing it fails the test instead of hanging it.
const waitLimit = 15 * time.Second

func TestMain(m *testing.M) {
	if backend := os.Getenv(agentBackendEnv); backend != "" {
		os.Exit(runAgent(nat.Backend(backend)))
	}
	os.Exit(m.Run())
}

// runAgent is the agent process: it serves on the address it is given,
// says "listening ADDR" on stdout, logs to stderr, and stops (removing
// its nat rules) when its stdin closes.
func runAgent(backend nat.Backend) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := agent.New(agent.Options{Token: os.Getenv(agentTokenEnv), Incoming: true, NATBackend: backend, Logger: log})
	if err != nil {
		log.Error("agent options", "err", err)
		return 1
	}
	ln, err := net.Listen("tcp", os.Getenv(agentListenEnv))
	if err != nil {
		log.Error("agent listen", "err", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Printf("listening %s\n", ln.Addr())
	if err := s.Serve(ctx, ln); err != nil {
		log.Error("agent serve", "err", err)
		return 1
	}
	return 0
}

// world is one test's pod (with its agent) and peer.
type world struct {
	backend   nat.Backend
	suffix    string // in the names of this world's links and clients
	pod, peer netns.NsHandle
	agentAddr netip.AddrPort // the agent's tunnel listener, in the pod
	token     string
	// stopAgent stops the agent (once; the test's cleanup does it too)
	// and checks that it left no rule behind.
	stopAgent func(t *testing.T)
}

// forBothBackends runs test in a world of its own for each nat backend.
func forBothBackends(t *testing.T, test func(t *testing.T, w *world)) {
	for _, b := range []nat.Backend{nat.IPTables, nat.NFTables} {
		t.Run(string(b), func(t *testing.T) { test(t, newWorld(t, b)) })
	}
}

func newWorld(t *testing.T, backend nat.Backend) *world {
	t.Helper()
	netnstest.RequireRoot(t)
	if backend == nat.IPTables {
		requireCommands(t, "iptables", "iptables", "ip6tables", "iptables-save", "ip6tables-save")
	}
	w := &world{backend: backend, suffix: netnstest.Suffix(t)[:6], pod: newNetns(t), peer: newNetns(t)}
	joinByVeth(t,
		vethEnd{ns: w.peer, name: "tpi-" + w.suffix + "-peer", addrs: []netip.Prefix{netip.PrefixFrom(peerAddr4, 24), netip.PrefixFrom(peerAddr6, 64)}},
		vethEnd{ns: w.pod, name: "tpi-" + w.suffix + "-pod", addrs: []netip.Prefix{netip.PrefixFrom(podAddr4, 24), netip.PrefixFrom(podAddr6, 64)}})
	w.startAgent(t)
	return w
}

// startAgent starts the agent process in the pod; the test's cleanup
// stops it and checks that it left no rule behind.
func (w *world) startAgent(t *testing.T) {
	t.Helper()
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		t.Fatal(err)
	}
	w.token = hex.EncodeToString(tok[:])
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		agentBackendEnv+"="+string(w.backend),
		agentListenEnv+"="+netip.AddrPortFrom(podAddr4, 0).String(),
		agentTokenEnv+"="+w.token)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	listening := &firstLine{line: make(chan string, 1)}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = listening, logs
	// Killed if the test binary dies without its cleanups; the namespace
	// goes with it, rules and all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	started, exited := make(chan error, 1), make(chan error, 1)
	go func() {
		// Never unlocked: the thread stays in the pod's namespace, and it
		// lives until the agent exits, since the parent-death signal
		// follows the thread that started the process.
		runtime.LockOSThread()
		if err := netns.Set(w.pod); err != nil {
			started <- fmt.Errorf("enter the pod's namespace: %w", err)
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		t.Fatalf("start the agent process: %v", err)
	}
	var once sync.Once
	w.stopAgent = func(t *testing.T) {
		t.Helper()
		once.Do(func() {
			_ = stdin.Close()
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("the agent process: %v", err)
				}
			case <-time.After(waitLimit):
				_ = cmd.Process.Kill()
				<-exited
				t.Errorf("the agent did not stop within %s of its stdin closing: killed", waitLimit)
			}
			t.Logf("agent log:\n%s", logs)
			if left := w.rules(t); len(left) != 0 {
				t.Errorf("the stopped agent left rules in the pod:\n%s", strings.Join(left, "\n"))
			}
		})
	}
	t.Cleanup(func() { w.stopAgent(t) })
	select {
	case line := <-listening.line:
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
		ap, err := netip.ParseAddrPort(addr)
		if !ok || err != nil {
			t.Fatalf("the agent said %q, want listening ADDR", line)
		}
		w.agentAddr = ap
	case <-time.After(waitLimit):
		t.Fatalf("the agent did not say where it listens within %s", waitLimit)
	}
}

// dialAgent opens a tunnel connection to the agent from the peer, as a
// client elsewhere in the cluster would.
func (w *world) dialAgent(ctx context.Context) (net.Conn, error) {
	var c net.Conn
	err := inNS(w.peer, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", w.agentAddr.String())
		return err
	})
	return c, err
}

// label is how the agent names a client of this world to the others.
func (w *world) label(name string) string { return name + "@incoming-test-" + w.suffix }

// dialClient connects a client named name to the agent (through
// w.dialAgent unless opts has a Dialer), closed when the test ends.
func (w *world) dialClient(t *testing.T, name string, opts client.Options) *client.Client {
	t.Helper()
	opts.Token = w.token
	opts.Label = w.label(name)
	if opts.Dialer == nil {
		opts.Dialer = w.dialAgent
	}
	c, err := client.Dial(context.Background(), opts)
	if err != nil {
		t.Fatalf("client %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if why := c.IncomingError(); why != "" {
		t.Fatalf("the agent cannot steal or mirror with the %s backend: %s", w.backend, why)
	}
	return c
}

// subscribe subscribes c to port, failing the test when the agent refuses.
func subscribe(t *testing.T, c *client.Client, mode client.Mode, port uint16, f config.HTTPFilter, to *app) *client.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	s, err := c.Subscribe(ctx, client.SubscribeOptions{Mode: mode, Port: port, Filter: f, Dial: to.dial})
	if err != nil {
		t.Fatalf("%s of port %d: %v", mode, port, err)
	}
	return s
}

// rules lists the agent's nat rules in the pod, as the kernel holds them.
func (w *world) rules(t testing.TB) []string { return listAgentRules(t, w.pod, w.backend) }

// listAgentRules lists the nat rules of trafficpolice agents in ns: for
// nftables their tables' rules (nat.ListNFTables), for iptables the lines
// of iptables-save and ip6tables-save (run inside ns) that name their
// chains, each prefixed with the command's name.
func listAgentRules(t testing.TB, ns netns.NsHandle, backend nat.Backend) []string {
	t.Helper()
	if backend == nat.NFTables {
		lines, err := nat.ListNFTables(int(ns))
		if err != nil {
			t.Fatalf("list the pod's nftables: %v", err)
		}
		return lines
	}
	var out []string
	err := inNS(ns, func() error {
		for _, save := range []string{"iptables-save", "ip6tables-save"} {
			b, err := exec.Command(save, "-t", "nat").Output()
			if err != nil {
				return fmt.Errorf("%s -t nat: %w", save, err)
			}
			for line := range strings.SplitSeq(string(b), "\n") {
				if strings.Contains(line, nat.ChainPrefix) {
					out = append(out, save+": "+line)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list the pod's iptables: %v", err)
	}
	return out
}

var (
	agentID        = regexp.MustCompile(regexp.QuoteMeta(nat.ChainPrefix) + `[0-9a-f]+`)
	listenerPortRe = regexp.MustCompile(`(--to-ports |redirect to :)\d+`)
)

// wantRedirects checks that the pod's rules are exactly one agent's,
// redirecting exactly ports (none: no rule at all), in both families and
// from both hooks (other hosts' connections and the pod's own), and
// letting the agent's marked sockets through.
func (w *world) wantRedirects(t *testing.T, ports ...uint16) {
	t.Helper()
	got := w.rules(t)
	ids := map[string]bool{}
	for i, line := range got {
		for _, id := range agentID.FindAllString(line, -1) {
			ids[id] = true
		}
		line = agentID.ReplaceAllString(line, nat.ChainPrefix+"ID")
		got[i] = listenerPortRe.ReplaceAllString(line, "${1}LISTENER")
	}
	if len(ids) > 1 {
		t.Errorf("rules of %d agents in the pod, want one's: %v", len(ids), ids)
	}
	var want []string
	if len(ports) > 0 {
		want = expectedRules(w.backend, ports)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the pod's rules (ids and listener ports generalised):\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// expectedRules are the rules an agent redirecting ports holds, as
// listAgentRules lists them, with its id as ID and its listener port as
// LISTENER.
func expectedRules(backend nat.Backend, ports []uint16) []string {
	var want []string
	chain := nat.ChainPrefix + "ID"
	if backend == nat.NFTables {
		for _, fam := range []string{"ip", "ip6"} {
			for _, hook := range []string{"prerouting", "output"} {
				head := fmt.Sprintf("%s %s %s (nat hook %s priority -100): ", fam, chain, hook, hook)
				want = append(want, head+fmt.Sprintf("meta mark %#x return", nat.Mark))
				for _, p := range ports {
					want = append(want, head+fmt.Sprintf("tcp dport %d syn fib daddr type local redirect to :LISTENER", p))
				}
			}
		}
		return want
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		want = append(want,
			fmt.Sprintf("%s: :%s - [0:0]", save, chain),
			fmt.Sprintf("%s: -A PREROUTING -j %s", save, chain),
			fmt.Sprintf("%s: -A OUTPUT -j %s", save, chain),
			fmt.Sprintf("%s: -A %s -m mark --mark %#x -j RETURN", save, chain, nat.Mark))
		for _, p := range ports {
			want = append(want, fmt.Sprintf("%s: -A %s -p tcp -m tcp --dport %d --tcp-flags FIN,SYN,RST,ACK SYN -m addrtype --dst-type LOCAL -j REDIRECT --to-ports LISTENER", save, chain, p))
		}
	}
	return want
}

// app is a TCP app of the test: the pod's own (listening in the pod) or a
// local app that a client's Subscribe dials.
type app struct {
	tag  string
	addr netip.AddrPort
	// handed gets what Subscribe's Dial was told, once per connection the
	// client dialed for the agent.
	handed chan client.IncomingConn
	// heard gets what the app read after it closed first (lineApp), or
	// all a connection sent it (recorder).
	heard chan string
}

func newApp(t *testing.T, tag string, ln net.Listener) *app {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	return &app{tag: tag, addr: ln.Addr().(*net.TCPAddr).AddrPort(), handed: make(chan client.IncomingConn, 64), heard: make(chan string, 64)}
}

// dial is the app's SubscribeOptions.Dial.
func (a *app) dial(ctx context.Context, in client.IncomingConn) (net.Conn, error) {
	select {
	case a.handed <- in:
	default: // nobody looks at this many
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", a.addr.String())
}

// nextHanded is what the next connection's Dial was told.
func (a *app) nextHanded(t *testing.T) client.IncomingConn {
	t.Helper()
	select {
	case in := <-a.handed:
		return in
	case <-time.After(waitLimit):
		t.Fatalf("%s: no connection was handed over within %s", a.tag, waitLimit)
	}
	return client.IncomingConn{}
}

func (a *app) nextHeard(t *testing.T) string {
	t.Helper()
	select {
	case s := <-a.heard:
		return s
	case <-time.After(waitLimit):
		t.Fatalf("%s heard nothing within %s", a.tag, waitLimit)
	}
	return ""
}

func localListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func (w *world) podListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := listenIn(w.pod, "[::]:0") // every address of the pod, both families
	if err != nil {
		t.Fatalf("listen in the pod: %v", err)
	}
	return ln
}

func (w *world) podLineApp(t *testing.T, tag string) *app {
	return serveLines(t, tag, w.podListener(t))
}

func localLineApp(t *testing.T, tag string) *app { return serveLines(t, tag, localListener(t)) }

func (w *world) podHTTPApp(t *testing.T, tag string) *app { return serveHTTP(t, tag, w.podListener(t)) }

func localHTTPApp(t *testing.T, tag string) *app { return serveHTTP(t, tag, localListener(t)) }

// serveLines answers each line with "TAG: LINE". On the caller's FIN it
// answers "TAG saw your FIN" and closes. After the line "close-first" it
// closes its own sending side first, and sends what still comes to heard.
func serveLines(t *testing.T, tag string, ln net.Listener) *app {
	a := newApp(t, tag, ln)
	go acceptEach(ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err == io.EOF && line == "" {
				fmt.Fprintf(c, "%s saw your FIN\n", tag)
				return
			}
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			fmt.Fprintf(c, "%s: %s\n", tag, line)
			if line == "close-first" {
				_ = c.(*net.TCPConn).CloseWrite()
				rest, _ := io.ReadAll(br)
				a.heard <- string(rest)
				return
			}
		}
	})
	return a
}

// serveHTTP answers every request with "TAG METHOD PATH BODYLENGTH".
func serveHTTP(t *testing.T, tag string, ln net.Listener) *app {
	a := newApp(t, tag, ln)
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(rw, "%s %s %s %d", tag, r.Method, r.URL.Path, n)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

// localRecorder is a local app for mirrors: it answers at once (the
// client must drop it) and sends all a connection brings to heard.
func localRecorder(t *testing.T, tag string) *app {
	ln := localListener(t)
	a := newApp(t, tag, ln)
	go acceptEach(ln, func(c net.Conn) {
		fmt.Fprintf(c, "HTTP/1.1 418 %s must never be heard\r\n\r\n", tag)
		b, _ := io.ReadAll(c)
		a.heard <- string(b)
	})
	return a
}

// acceptEach serves each connection of ln with serve until ln closes.
func acceptEach(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(waitLimit))
			serve(c)
		}()
	}
}

// peerConn is a caller's connection to a pod port.
type peerConn struct {
	*net.TCPConn
	br *bufio.Reader
}

// connect opens a connection from ns (the peer's, or the pod's own) to to.
func connect(t *testing.T, ns netns.NsHandle, to netip.AddrPort) *peerConn {
	t.Helper()
	c, err := dialFrom(ns, to)
	if err != nil {
		t.Fatalf("dial %s: %v", to, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(waitLimit))
	return &peerConn{TCPConn: c.(*net.TCPConn), br: bufio.NewReader(c)}
}

func (c *peerConn) local() netip.AddrPort { return c.LocalAddr().(*net.TCPAddr).AddrPort() }

// say sends a line and returns the answer line (without its newline).
func (c *peerConn) say(t *testing.T, line string) string {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("send %q: %v", line, err)
	}
	got, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatalf("answer to %q: %q, %v", line, got, err)
	}
	return strings.TrimSuffix(got, "\n")
}

// finish half-closes the connection and returns all that still comes
// back until the other side closes.
func (c *peerConn) finish(t *testing.T) string {
	t.Helper()
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("half-close: %v", err)
	}
	return c.rest(t)
}

// rest reads until the other side closes.
func (c *peerConn) rest(t *testing.T) string {
	t.Helper()
	b, err := io.ReadAll(c.br)
	if err != nil {
		t.Fatalf("read until the other side closes: %q, %v", b, err)
	}
	return string(b)
}

// request sends one HTTP request (header is name, value, ...) and returns
// "STATUS BODY".
func (c *peerConn) request(t *testing.T, method, path, body string, header ...string) string {
	t.Helper()
	var raw strings.Builder
	fmt.Fprintf(&raw, "%s %s HTTP/1.1\r\nHost: pod\r\n", method, path)
	for i := 0; i+1 < len(header); i += 2 {
		fmt.Fprintf(&raw, "%s: %s\r\n", header[i], header[i+1])
	}
	if body != "" {
		fmt.Fprintf(&raw, "Content-Length: %d\r\n", len(body))
	}
	raw.WriteString("\r\n" + body)
	return c.send(t, raw.String(), method)
}

// send writes a raw request and returns the answer as "STATUS BODY".
func (c *peerConn) send(t *testing.T, raw, method string) string {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("send %q: %v", raw, err)
	}
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("the answer to %q: %v", raw, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("the answer's body to %q: %v", raw, err)
	}
	return fmt.Sprintf("%d %s", res.StatusCode, b)
}

// eventually polls cond until it holds, failing the test after waitLimit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// firstLine hands the first line written to it to line.
type firstLine struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	sent bool
	line chan string
}

func (f *firstLine) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf.Write(p)
	if !f.sent {
		if line, _, ok := strings.Cut(f.buf.String(), "\n"); ok {
			f.sent = true
			f.line <- line
		}
	}
	return len(p), nil
}

// syncBuffer is a log sink safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLog sends a log to the test's.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
