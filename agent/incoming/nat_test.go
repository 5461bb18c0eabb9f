package incoming

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// These tests run the steal and mirror machinery with real nat rules, in
// both backends, in network namespaces of the test's own: a "pod" with the
// agent's listeners, rules and the pod's app, and a "client" namespace
// joined to it by a veth pair. The namespaces are held by file descriptors
// only (no name under /run/netns), so they vanish with the test, rules and
// all. The tunnel side is the in-memory one of steal_test.go.

var (
	podAddr4    = netip.MustParseAddr("192.0.2.2") // TEST-NET-1: only ever inside the test's namespaces
	clientAddr4 = netip.MustParseAddr("192.0.2.1")
	podAddr6    = netip.MustParseAddr("2001:db8::2")
	clientAddr6 = netip.MustParseAddr("2001:db8::1")
)

// needRoot stops a test that needs root: it fails under CI=true, else skips.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (network namespaces, nat rules); CI=true: unmet requirements fail")
	}
	t.Skip("this test needs root (network namespaces, nat rules)")
}

// needIPTables stops a test that needs the iptables binaries.
func needIPTables(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (apt-get install iptables); CI=true: unmet requirements fail", bin)
			}
			t.Skipf("%s is missing (apt-get install iptables)", bin)
		}
	}
}

// inNS runs fn on an OS thread of its own inside ns, so that the sockets,
// netlink connections and child processes fn makes belong to ns. The
// thread is never unlocked: Go ends it with the goroutine, and with it
// the namespace switch.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter the test's network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// newTestNetns makes a network namespace with loopback up, removed when
// the test ends (the last file descriptor and socket in it closed).
func newTestNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	hc := make(chan netns.NsHandle, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread stays in the new namespace and ends here
		h, err := netns.New()
		hc <- h
		errc <- err
	}()
	h, err := <-hc, <-errc
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err == nil {
		err = nh.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up: %v", err)
	}
	return h
}

// joinNamespaces links client and pod with a veth pair and gives both ends
// their addresses.
func joinNamespaces(t *testing.T, client, pod netns.NsHandle) {
	t.Helper()
	ch, err := netlink.NewHandleAt(client)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ph, err := netlink.NewHandleAt(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	la := netlink.NewLinkAttrs()
	la.Name = "tp-client"
	if err := ch.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "tp-pod", PeerNamespace: netlink.NsFd(pod)}); err != nil {
		t.Fatalf("veth pair: %v", err)
	}
	for _, end := range []struct {
		h           *netlink.Handle
		name        string
		addr, addr6 netip.Addr
	}{{ch, "tp-client", clientAddr4, clientAddr6}, {ph, "tp-pod", podAddr4, podAddr6}} {
		link, err := end.h.LinkByName(end.name)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []netip.Prefix{netip.PrefixFrom(end.addr, 24), netip.PrefixFrom(end.addr6, 64)} {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
			if err := end.h.AddrAdd(link, addr); err != nil {
				t.Fatalf("address %s on %s: %v", a, end.name, err)
			}
		}
		if err := end.h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
	}
}

// nsRules makes the backend's calls from inside the pod's namespace, as
// they are made in the agent, whose every thread is there.
type nsRules struct {
	r  nat.Rules
	ns netns.NsHandle
}

func (n nsRules) Add(p uint16) error { return inNS(n.ns, func() error { return n.r.Add(p) }) }

func (n nsRules) Remove(p uint16) error { return inNS(n.ns, func() error { return n.r.Remove(p) }) }

// natWorld is an agent's incoming machinery set up in a pod namespace with
// real nat rules, and a client namespace next to it.
type natWorld struct {
	backend     nat.Backend
	pod, client netns.NsHandle
	in          *Service
	rules       nat.Rules
	id          string
}

func newNATWorld(t *testing.T, backend nat.Backend) *natWorld {
	t.Helper()
	needRoot(t)
	if backend == nat.IPTables {
		needIPTables(t)
	}
	w := &natWorld{backend: backend, pod: newTestNetns(t), client: newTestNetns(t)}
	joinNamespaces(t, w.client, w.pod)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// What the agent does at start, inside the pod's namespace.
	var in *Service
	err := inNS(w.pod, func() (err error) {
		in, err = Start(ctx, Options{Log: testLogger(t), Backend: backend, Linger: 5 * time.Second,
			OpenTimeout: 5 * time.Second, DialTimeout: 5 * time.Second, Reserved: map[uint16]string{1: "the agent's own tunnel port"}}, &wg)
		return err
	})
	if err != nil {
		cancel()
		t.Fatalf("incoming traffic did not start with the %s backend: %v", backend, err)
	}
	t.Cleanup(func() {
		_ = inNS(w.pod, func() error { in.Close(); return nil })
		cancel()
		wg.Wait()
	})
	w.in = in
	w.rules = in.natRules
	if w.rules.Kind() != backend {
		t.Fatalf("asked for the %s backend, got %s", backend, w.rules.Kind())
	}
	w.id = strings.TrimPrefix(w.rules.Name(), nat.ChainPrefix)
	w.in.rules = nsRules{w.rules, w.pod}
	w.in.dial = func(ctx context.Context, dst netip.AddrPort) (c *net.TCPConn, err error) {
		err = inNS(w.pod, func() error {
			c, err = w.in.dialPod(ctx, dst)
			return err
		})
		return c, err
	}
	return w
}

// podApp serves HTTP ("pod METHOD PATH N") on every address of the pod.
func (w *natWorld) podApp(t *testing.T) uint16 {
	t.Helper()
	var ln net.Listener
	if err := inNS(w.pod, func() (err error) {
		ln, err = net.Listen("tcp", ":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(rw, "pod %s %s %d", r.Method, r.URL.Path, n)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// dial connects from ns (the client's or the pod's own) to addr.
func dialFrom(t *testing.T, ns netns.NsHandle, addr netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	if err := inNS(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// get sends one request on a new connection from ns and returns the body.
func (w *natWorld) get(t *testing.T, ns netns.NsHandle, addr netip.AddrPort, path string, header ...string) string {
	t.Helper()
	c := dialFrom(t, ns, addr)
	defer c.Close()
	return ask(t, c, bufio.NewReader(c), path, header...)
}

func ask(t *testing.T, c net.Conn, br *bufio.Reader, path string, header ...string) string {
	t.Helper()
	raw := "GET " + path + " HTTP/1.1\r\nHost: pod\r\n"
	for i := 0; i+1 < len(header); i += 2 {
		raw += header[i] + ": " + header[i+1] + "\r\n"
	}
	got := roundTrip(t, c, br, raw+"\r\n", "GET")
	return strings.TrimPrefix(got[0], "200 ")
}

// state is the agent's rules in the pod as the kernel holds them, ""
// when there are none.
func (w *natWorld) state(t *testing.T) string {
	t.Helper()
	if w.backend == nat.NFTables {
		lines, err := nat.ListNFTables(int(w.pod))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(lines, "\n")
	}
	var out []string
	err := inNS(w.pod, func() error {
		for _, p := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
			ipt, err := iptables.New(iptables.IPFamily(p))
			if err != nil {
				return err
			}
			for _, ch := range []string{"PREROUTING", "OUTPUT"} {
				rules, err := ipt.List("nat", ch)
				if err != nil {
					return err
				}
				for _, r := range rules {
					if strings.Contains(r, nat.ChainPrefix) {
						out = append(out, r)
					}
				}
			}
			chains, err := ipt.ListChains("nat")
			if err != nil {
				return err
			}
			for _, ch := range chains {
				if strings.HasPrefix(ch, nat.ChainPrefix) {
					rules, err := ipt.List("nat", ch)
					if err != nil {
						return err
					}
					out = append(out, rules...)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list the pod's iptables nat rules: %v", err)
	}
	return strings.Join(out, "\n")
}

// wantRedirects checks that the rules redirect exactly ports, in both
// families and from both hooks, and let the agent's mark through.
func (w *natWorld) wantRedirects(t *testing.T, ports ...uint16) {
	t.Helper()
	st := w.state(t)
	if len(ports) == 0 {
		if st != "" {
			t.Errorf("the pod still holds rules of the agent:\n%s", st)
		}
		return
	}
	var want []string
	for _, p := range ports {
		if w.backend == nat.NFTables {
			for _, fam := range []string{"ip", "ip6"} {
				for _, hook := range []string{"prerouting", "output"} {
					want = append(want, fmt.Sprintf("%s %s%s %s (nat hook %s priority -100): tcp dport %d syn fib daddr type local redirect to :",
						fam, nat.ChainPrefix, w.id, hook, hook, p))
				}
			}
		} else {
			want = append(want, fmt.Sprintf("--dport %d --tcp-flags FIN,SYN,RST,ACK SYN -m addrtype --dst-type LOCAL -j REDIRECT --to-ports ", p))
		}
	}
	if w.backend == nat.NFTables {
		want = append(want, fmt.Sprintf("ip %s%s prerouting (nat hook prerouting priority -100): meta mark %#x return", nat.ChainPrefix, w.id, nat.Mark),
			fmt.Sprintf("ip6 %s%s output (nat hook output priority -100): meta mark %#x return", nat.ChainPrefix, w.id, nat.Mark))
	} else {
		want = append(want, "-A PREROUTING -j "+nat.ChainPrefix+w.id, "-A OUTPUT -j "+nat.ChainPrefix+w.id, fmt.Sprintf("--mark %#x -j RETURN", nat.Mark))
	}
	for _, s := range want {
		if !strings.Contains(st, s) {
			t.Errorf("the pod's rules lack %q:\n%s", s, st)
		}
	}
	// nftables: per family, a chain per hook; iptables: per family, one
	// chain jumped to from both hooks.
	perPort := 2
	if w.backend == nat.NFTables {
		perPort = 4
	}
	if n := strings.Count(st, "dport"); n != len(ports)*perPort {
		t.Errorf("%d redirects in the pod's rules, want %d for ports %v:\n%s", n, len(ports)*perPort, ports, st)
	}
}

func forBothBackends(t *testing.T, test func(t *testing.T, w *natWorld)) {
	for _, b := range []nat.Backend{nat.IPTables, nat.NFTables} {
		t.Run(string(b), func(t *testing.T) { test(t, newNATWorld(t, b)) })
	}
}

func TestStealWithRealRules(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *natWorld) {
		port := w.podApp(t)
		other := w.podApp(t)
		pod4, pod6 := netip.AddrPortFrom(podAddr4, port), netip.AddrPortFrom(podAddr6, port)
		w.wantRedirects(t)

		// A keep-alive connection from before the steal stays with the pod.
		before := dialFrom(t, w.client, pod4)
		beforeR := bufio.NewReader(before)
		if got := ask(t, before, beforeR, "/before"); got != "pod GET /before 0" {
			t.Fatalf("before the steal: %q", got)
		}

		local := newTestClient(t, "local", proto.ModeSteal, false)
		sub, err := w.in.subscribe(local.t, steal(port, "local", proto.HTTPFilter{}))
		if err != nil {
			t.Fatal(err)
		}
		w.wantRedirects(t, port)
		for _, c := range []struct {
			name string
			from netns.NsHandle
			to   netip.AddrPort
		}{
			{"another host, IPv4", w.client, pod4},
			{"another host, IPv6", w.client, pod6},
			{"the pod itself, 127.0.0.1", w.pod, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)},
			{"the pod itself, ::1", w.pod, netip.AddrPortFrom(netip.IPv6Loopback(), port)},
			{"the pod itself, its own address", w.pod, pod4},
		} {
			if got := w.get(t, c.from, c.to, "/stolen"); got != "local GET /stolen 0" {
				t.Errorf("from %s to %s: %q, want the local app's answer", c.name, c.to, got)
			}
		}
		if got := ask(t, before, beforeR, "/still"); got != "pod GET /still 0" {
			t.Errorf("the connection from before the steal: %q, want the pod's app", got)
		}
		if got := w.get(t, w.client, netip.AddrPortFrom(podAddr4, other), "/other"); got != "pod GET /other 0" {
			t.Errorf("a port nobody steals: %q", got)
		}

		w.in.release(sub)
		w.wantRedirects(t)
		if got := w.get(t, w.client, pod4, "/after"); got != "pod GET /after 0" {
			t.Errorf("after the steal: %q, want the pod's app", got)
		}
	})
}

func TestFilteredStealPassesThroughPastTheRules(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *natWorld) {
		port, port2 := w.podApp(t), w.podApp(t)
		alice := newTestClient(t, "alice", proto.ModeSteal, false)
		a, err := w.in.subscribe(alice.t, steal(port, "alice", header("^x-user: alice$")))
		if err != nil {
			t.Fatal(err)
		}
		b, err := w.in.subscribe(alice.t, steal(port2, "alice", proto.HTTPFilter{}))
		if err != nil {
			t.Fatal(err)
		}
		w.wantRedirects(t, port, port2)
		// Requests for the pod's app are dialed by the agent to the very
		// address that is redirected: only the mark lets them through.
		c := dialFrom(t, w.client, netip.AddrPortFrom(podAddr4, port))
		br := bufio.NewReader(c)
		for i, want := range []string{"alice GET /0 0", "pod GET /1 0", "alice GET /2 0", "pod GET /3 0"} {
			var h []string
			if i%2 == 0 {
				h = []string{"X-User", "alice"}
			}
			if got := ask(t, c, br, fmt.Sprintf("/%d", i), h...); got != want {
				t.Errorf("request %d: %q, want %q", i, got, want)
			}
		}
		// One port released, the other keeps its redirect.
		w.in.release(b)
		w.wantRedirects(t, port)
		if got := w.get(t, w.client, netip.AddrPortFrom(podAddr6, port2), "/freed"); got != "pod GET /freed 0" {
			t.Errorf("the released port: %q", got)
		}
		w.in.release(a)
		w.wantRedirects(t)
	})
}

func TestMirrorWithRealRules(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *natWorld) {
		port := w.podApp(t)
		watcher := newTestClient(t, "watcher", proto.ModeMirror, true)
		if _, err := w.in.subscribe(watcher.t, proto.Subscribe{Mode: proto.ModeMirror, Port: port, Owner: "w"}); err != nil {
			t.Fatal(err)
		}
		w.wantRedirects(t, port)
		c := dialFrom(t, w.client, netip.AddrPortFrom(podAddr6, port))
		if got := ask(t, c, bufio.NewReader(c), "/m"); got != "pod GET /m 0" {
			t.Errorf("a mirrored request: %q, want the pod's answer", got)
		}
		c.Close()
		select {
		case copy := <-watcher.copies:
			if !strings.HasPrefix(copy, "GET /m HTTP/1.1\r\n") {
				t.Errorf("the mirror got %q", copy)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the mirror got no copy")
		}
		w.in.close()
		w.wantRedirects(t)
	})
}

// TestSweepRemovesDeadAgentsRulesOfEitherBackend: an agent at start
// removes the rules of dead agents, whichever backend wrote them, and
// leaves a live agent's alone.
func TestSweepRemovesDeadAgentsRulesOfEitherBackend(t *testing.T) {
	needRoot(t)
	needIPTables(t)
	pod := newTestNetns(t)
	log := testLogger(t)
	type agentRules struct {
		rules nat.Rules
		live  net.Listener
	}
	var all []agentRules
	for _, b := range []nat.Backend{nat.IPTables, nat.NFTables} {
		for _, alive := range []bool{false, true} {
			var a agentRules
			err := inNS(pod, func() (err error) {
				id := randomTestID(t)
				if alive {
					if a.live, err = nat.HoldLiveness(id); err != nil {
						return err
					}
				}
				if a.rules, err = nat.New(b, id, 40001, 40002, log); err != nil {
					return err
				}
				return a.rules.Add(8080)
			})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, a)
			t.Cleanup(func() {
				_ = inNS(pod, a.rules.Close)
				if a.live != nil {
					a.live.Close()
				}
			})
		}
	}
	var removed []string
	if err := inNS(pod, func() (err error) {
		removed, err = nat.SweepStale(randomTestID(t), log)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ipt := (&natWorld{backend: nat.IPTables, pod: pod}).state(t)
	nft := (&natWorld{backend: nat.NFTables, pod: pod}).state(t)
	for _, a := range all {
		inState := strings.Contains(ipt+nft, a.rules.Name())
		if a.live == nil && inState {
			t.Errorf("the dead agent's %s is still there:\n%s\n%s", a.rules.Where(), ipt, nft)
		}
		if a.live != nil && !inState {
			t.Errorf("the live agent's %s was removed", a.rules.Where())
		}
	}
	if len(removed) != 4 { // iptables and ip6tables chains, ip and ip6 tables
		t.Errorf("sweep removed %v, want the dead agents' two chains and two tables", removed)
	}
}

func randomTestID(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func TestNATBackendChoice(t *testing.T) {
	for _, c := range []struct {
		in   string
		want nat.Backend
	}{{"", nat.Auto}, {"auto", nat.Auto}, {"NFTables", nat.NFTables}, {" iptables ", nat.IPTables}} {
		if got, err := nat.ParseBackend(c.in); err != nil || got != c.want {
			t.Errorf("nat.ParseBackend(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := nat.ParseBackend("pf"); err == nil || !strings.Contains(err.Error(), `"pf" is not a nat backend: use auto, iptables or nftables`) {
		t.Errorf("nat.ParseBackend(pf): %v", err)
	}

	needRoot(t)
	needIPTables(t)
	pod := newTestNetns(t)
	choose := func(choice nat.Backend) (nat.Rules, error) {
		var r nat.Rules
		err := inNS(pod, func() (err error) {
			r, err = nat.New(choice, randomTestID(t), 40001, 40002, testLogger(t))
			return err
		})
		return r, err
	}
	if r, err := choose(nat.Auto); err != nil || r.Kind() != nat.IPTables {
		t.Errorf("auto where iptables works: %v, %v; want iptables", r, err)
	}
	// The agent's image: no iptables binary anywhere.
	t.Setenv("PATH", t.TempDir())
	if r, err := choose(nat.Auto); err != nil || r.Kind() != nat.NFTables {
		t.Errorf("auto without iptables: %v, %v; want nftables", r, err)
	}
	if _, err := choose(nat.IPTables); err == nil || !strings.Contains(err.Error(), "iptables") {
		t.Errorf("iptables forced where it is missing: %v, want an error naming iptables", err)
	}
	if r, err := choose(nat.NFTables); err != nil || r.Kind() != nat.NFTables {
		t.Errorf("nftables forced: %v, %v", r, err)
	}
}
