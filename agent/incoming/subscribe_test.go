package incoming_test

// Steal and mirror as a user gets them: a real agent in a pod namespace
// with real nat rules (both backends), callers in a peer namespace, and
// clients that subscribe through agent/client's public API. See
// world_test.go for the setup.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/config"
)

var wholeConnections = config.HTTPFilter{}

func TestStealTakesWholeConnectionsUntilTheSubscriptionCloses(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *world) {
		pod := w.podLineApp(t, "pod")
		other := w.podLineApp(t, "pod-other")
		port := pod.addr.Port()
		pod4, pod6 := netip.AddrPortFrom(podAddr4, port), netip.AddrPortFrom(podAddr6, port)
		w.wantRedirects(t)

		// A connection from before the steal stays with the pod's app.
		before := connect(t, w.peer, pod4)
		if got := before.say(t, "before"); got != "pod: before" {
			t.Fatalf("before the steal: %q", got)
		}

		local := localLineApp(t, "local")
		c := w.dialClient(t, "alice", client.Options{})
		sub := subscribe(t, c, client.Steal, port, wholeConnections, local)
		w.wantRedirects(t, port)

		for _, from := range []struct {
			name string
			ns   netns.NsHandle
			to   netip.AddrPort
		}{
			{"the peer, IPv4", w.peer, pod4},
			{"the peer, IPv6", w.peer, pod6},
			{"the pod itself, 127.0.0.1", w.pod, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)},
			{"the pod itself, ::1", w.pod, netip.AddrPortFrom(netip.IPv6Loopback(), port)},
			{"the pod itself, its own address", w.pod, pod4},
		} {
			// The caller half-closes first: its FIN reaches the local app,
			// whose answer still comes back before it closes.
			conn := connect(t, from.ns, from.to)
			if got := conn.say(t, "ping"); got != "local: ping" {
				t.Errorf("from %s to %s: %q, want the local app's answer", from.name, from.to, got)
			}
			if got := conn.finish(t); got != "local saw your FIN\n" {
				t.Errorf("from %s, after the caller's FIN: %q, want the local app's last words", from.name, got)
			}
			want := client.IncomingConn{Mode: client.Steal, Port: port, Src: conn.local(), Dst: from.to}
			if got := local.nextHanded(t); got != want {
				t.Errorf("from %s, Dial was told %+v, want %+v", from.name, got, want)
			}
		}

		// The local app half-closes first: its FIN reaches the caller,
		// who can still send.
		conn := connect(t, w.peer, pod6)
		if got := conn.say(t, "close-first"); got != "local: close-first" {
			t.Errorf("close-first: %q", got)
		}
		if got := conn.rest(t); got != "" {
			t.Errorf("after the local app's FIN: %q, want the end of the stream", got)
		}
		if _, err := conn.Write([]byte("still talking\n")); err != nil {
			t.Fatalf("send after the local app's FIN: %v", err)
		}
		if got := conn.finish(t); got != "" {
			t.Errorf("after both FINs: %q", got)
		}
		if got := local.nextHeard(t); got != "still talking\n" {
			t.Errorf("the local app heard %q after its own FIN, want what the caller sent", got)
		}
		if got := local.nextHanded(t); got.Src != conn.local() {
			t.Errorf("Dial was told %+v, want the source %s", got, conn.local())
		}

		if got := before.say(t, "still"); got != "pod: still" {
			t.Errorf("the connection from before the steal: %q, want the pod's app", got)
		}
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, other.addr.Port())).say(t, "x"); got != "pod-other: x" {
			t.Errorf("a port nobody steals: %q", got)
		}

		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		w.wantRedirects(t)
		if got := connect(t, w.peer, pod4).say(t, "after"); got != "pod: after" {
			t.Errorf("after the subscription closed: %q, want the pod's app", got)
		}
	})
}

func TestHTTPFilteredStealTakesMatchingRequestsOnly(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *world) {
		pod, pod2 := w.podHTTPApp(t, "pod"), w.podHTTPApp(t, "pod2")
		port, port2 := pod.addr.Port(), pod2.addr.Port()
		alice, bob := localHTTPApp(t, "alice"), localHTTPApp(t, "bob")
		ca, cb := w.dialClient(t, "alice", client.Options{}), w.dialClient(t, "bob", client.Options{})
		byHeader := subscribe(t, ca, client.Steal, port, config.HTTPFilter{HeaderFilter: "^x-user: alice$"}, alice)
		byPath := subscribe(t, cb, client.Steal, port, config.HTTPFilter{PathFilter: "^/bob/"}, bob)
		whole := subscribe(t, ca, client.Steal, port2, wholeConnections, alice)
		w.wantRedirects(t, port, port2)

		// One keep-alive connection: each request goes where its filter
		// says, the rest to the pod's app, which the agent reaches at the
		// very address its rules redirect.
		conn := connect(t, w.peer, netip.AddrPortFrom(podAddr4, port))
		for i, r := range []struct {
			method, path, body string
			header             []string
			want               string
		}{
			{"GET", "/0", "", []string{"X-User", "alice"}, "200 alice GET /0 0"},
			{"GET", "/1", "", nil, "200 pod GET /1 0"},
			{"POST", "/bob/2", "hello", nil, "200 bob POST /bob/2 5"},
			{"POST", "/3", "abc", []string{"X-User", "alice"}, "200 alice POST /3 3"},
			{"GET", "/4", "", []string{"X-User", "alice-not"}, "200 pod GET /4 0"},
			// Both filters match: the first subscription takes it.
			{"GET", "/bob/5", "", []string{"x-user", "alice"}, "200 alice GET /bob/5 0"},
			{"POST", "/6", "xyz", nil, "200 pod POST /6 3"},
		} {
			if got := conn.request(t, r.method, r.path, r.body, r.header...); got != r.want {
				t.Errorf("request %d (%s %s %v): %q, want %q", i, r.method, r.path, r.header, got, r.want)
			}
		}
		want := client.IncomingConn{Mode: client.Steal, Port: port, Src: conn.local(), Dst: netip.AddrPortFrom(podAddr4, port)}
		if got := alice.nextHanded(t); got != want {
			t.Errorf("alice's Dial was told %+v, want %+v", got, want)
		}
		if got := bob.nextHanded(t); got != want {
			t.Errorf("bob's Dial was told %+v, want %+v", got, want)
		}

		// One port given back, the other keeps its redirect.
		if err := whole.Close(); err != nil {
			t.Fatal(err)
		}
		w.wantRedirects(t, port)
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr6, port2)).request(t, "GET", "/freed", ""); got != "200 pod2 GET /freed 0" {
			t.Errorf("the port given back: %q", got)
		}
		for _, s := range []*client.Subscription{byHeader, byPath} {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		w.wantRedirects(t)
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, port)).request(t, "GET", "/after", "", "X-User", "alice"); got != "200 pod GET /after 0" {
			t.Errorf("after the filtered steals closed: %q, want the pod's app", got)
		}
	})
}

func TestMirrorCopiesWhileThePodAnswers(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *world) {
		pod := w.podHTTPApp(t, "pod")
		port := pod.addr.Port()
		carol, dave := localRecorder(t, "carol"), localRecorder(t, "dave")
		wholeCopy := subscribe(t, w.dialClient(t, "carol", client.Options{}), client.Mirror, port, wholeConnections, carol)
		filteredCopy := subscribe(t, w.dialClient(t, "dave", client.Options{}), client.Mirror, port, config.HTTPFilter{HeaderFilter: "^x-copy: dave$"}, dave)
		w.wantRedirects(t, port)

		to := netip.AddrPortFrom(podAddr6, port)
		conn := connect(t, w.peer, to)
		first := "GET /m1 HTTP/1.1\r\nHost: pod\r\n\r\n"
		second := "POST /m2 HTTP/1.1\r\nHost: pod\r\nX-Copy: dave\r\nContent-Length: 4\r\n\r\nbody"
		if got := conn.send(t, first, "GET"); got != "200 pod GET /m1 0" {
			t.Errorf("a mirrored request: %q, want the pod's answer", got)
		}
		if got := conn.send(t, second, "POST"); got != "200 pod POST /m2 4" {
			t.Errorf("a mirrored request: %q, want the pod's answer", got)
		}
		// The local apps' answers never reach the caller.
		if got := conn.finish(t); got != "" {
			t.Errorf("after the pod's answers: %q, want nothing more", got)
		}
		if got := carol.nextHeard(t); got != first+second {
			t.Errorf("the whole-connection mirror got %q, want %q", got, first+second)
		}
		if got := dave.nextHeard(t); got != second {
			t.Errorf("the filtered mirror got %q, want only the matching request %q", got, second)
		}
		want := client.IncomingConn{Mode: client.Mirror, Port: port, Src: conn.local(), Dst: to}
		for _, a := range []*app{carol, dave} {
			if got := a.nextHanded(t); got != want {
				t.Errorf("%s's Dial was told %+v, want %+v", a.tag, got, want)
			}
		}

		for _, s := range []*client.Subscription{wholeCopy, filteredCopy} {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		w.wantRedirects(t)
	})
}

func TestWholeStealRefusedWhileAnotherClientHoldsThePort(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *world) {
		port := w.podLineApp(t, "pod").addr.Port()
		alice, bob := localLineApp(t, "alice"), localLineApp(t, "bob")
		ca, cb := w.dialClient(t, "alice", client.Options{}), w.dialClient(t, "bob", client.Options{})
		held := subscribe(t, ca, client.Steal, port, wholeConnections, alice)

		refusal := fmt.Sprintf("steal pod port %d: the agent refused: port %d is already stolen whole by %s", port, port, w.label("alice"))
		for _, f := range []config.HTTPFilter{wholeConnections, {HeaderFilter: "^x-user: bob$"}} {
			_, err := cb.Subscribe(context.Background(), client.SubscribeOptions{Mode: client.Steal, Port: port, Filter: f, Dial: bob.dial})
			if err == nil || !strings.Contains(err.Error(), refusal) {
				t.Errorf("a second steal (filter %+v) of a port stolen whole: %v, want %q", f, err, refusal)
			}
		}
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, port)).say(t, "who"); got != "alice: who" {
			t.Errorf("after the refusals: %q, want the holder's app", got)
		}

		if err := held.Close(); err != nil {
			t.Fatal(err)
		}
		taken := subscribe(t, cb, client.Steal, port, wholeConnections, bob)
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, port)).say(t, "who"); got != "bob: who" {
			t.Errorf("once the holder stopped: %q, want the new holder's app", got)
		}
		if err := taken.Close(); err != nil {
			t.Fatal(err)
		}
		w.wantRedirects(t)
	})
}

func TestClientCloseGivesThePortsBack(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *world) {
		stolen := w.podLineApp(t, "pod").addr.Port()
		mirrored := w.podHTTPApp(t, "pod2").addr.Port()
		c := w.dialClient(t, "alice", client.Options{})
		subscribe(t, c, client.Steal, stolen, wholeConnections, localLineApp(t, "alice"))
		subscribe(t, c, client.Mirror, mirrored, wholeConnections, localRecorder(t, "alice-copies"))
		w.wantRedirects(t, stolen, mirrored)
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, stolen)).say(t, "who"); got != "alice: who" {
			t.Errorf("while stolen: %q", got)
		}

		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		w.wantRedirects(t)
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, stolen)).say(t, "who"); got != "pod: who" {
			t.Errorf("after the client closed: %q, want the pod's app", got)
		}
		_, err := c.Subscribe(context.Background(), client.SubscribeOptions{Mode: client.Steal, Port: stolen, Dial: localLineApp(t, "late").dial})
		if !errors.Is(err, client.ErrClosed) {
			t.Errorf("Subscribe on a closed client: %v, want ErrClosed", err)
		}
		// Given back, not kept for a reconnection: another client takes
		// the port at once.
		subscribe(t, w.dialClient(t, "bob", client.Options{}), client.Steal, stolen, wholeConnections, localLineApp(t, "bob"))
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, stolen)).say(t, "who"); got != "bob: who" {
			t.Errorf("another client's steal after the first closed: %q", got)
		}
	})
}

func TestAgentStopGivesThePortsBack(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *world) {
		port := w.podLineApp(t, "pod").addr.Port()
		c := w.dialClient(t, "alice", client.Options{})
		subscribe(t, c, client.Steal, port, wholeConnections, localLineApp(t, "alice"))
		w.wantRedirects(t, port)

		w.stopAgent(t) // fails the test if rules are left
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, port)).say(t, "who"); got != "pod: who" {
			t.Errorf("after the agent stopped: %q, want the pod's app", got)
		}
	})
}

// cuttableDialer reaches the agent until cut: then it closes the
// tunnel's connection and refuses new ones until restored.
type cuttableDialer struct {
	w *world

	mu   sync.Mutex
	down bool
	last net.Conn
}

func (d *cuttableDialer) dial(ctx context.Context) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		return nil, errors.New("the test keeps the agent out of reach")
	}
	c, err := d.w.dialAgent(ctx)
	if err == nil {
		d.last = c
	}
	return c, err
}

func (d *cuttableDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = true
	_ = d.last.Close()
}

func (d *cuttableDialer) restore() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = false
}

func TestStealOfALostClientGoesToThePodUntilItIsBack(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *world) {
		port := w.podLineApp(t, "pod").addr.Port()
		to := netip.AddrPortFrom(podAddr4, port)
		local := localLineApp(t, "alice")
		d := &cuttableDialer{w: w}
		states := make(chan client.State, 16)
		c := w.dialClient(t, "alice", client.Options{Dialer: d.dial, OnState: func(s client.State, _ error) {
			select {
			case states <- s:
			default: // more than this test waits for
			}
		}})
		sub := subscribe(t, c, client.Steal, port, wholeConnections, local)
		if got := connect(t, w.peer, to).say(t, "who"); got != "alice: who" {
			t.Fatalf("while stolen: %q", got)
		}

		d.cut()
		waitState(t, states, client.StateReconnecting)
		if got := connect(t, w.peer, to).say(t, "who"); got != "pod: who" {
			t.Errorf("while the stealing client is away: %q, want the pod's app", got)
		}
		// The port is kept for its owner meanwhile.
		refusal := "is already stolen whole by " + w.label("alice")
		bob := w.dialClient(t, "bob", client.Options{})
		if _, err := bob.Subscribe(context.Background(), client.SubscribeOptions{Mode: client.Steal, Port: port, Dial: localLineApp(t, "bob").dial}); err == nil || !strings.Contains(err.Error(), refusal) {
			t.Errorf("another client's steal while the owner is away: %v, want %q", err, refusal)
		}

		d.restore()
		waitState(t, states, client.StateConnected)
		// The client renews its steal right after reconnecting; until
		// then the pod's app answers.
		eventually(t, "the steal renewed after the reconnection", func() bool {
			conn := connect(t, w.peer, to)
			defer conn.Close()
			got := conn.say(t, "who")
			if got != "pod: who" && got != "alice: who" {
				t.Fatalf("while the steal is renewed: %q, want the pod's or alice's app", got)
			}
			return got == "alice: who"
		})
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		w.wantRedirects(t)
	})
}

func waitState(t *testing.T, states <-chan client.State, want client.State) {
	t.Helper()
	limit := time.After(waitLimit)
	for {
		select {
		case s := <-states:
			if s == want {
				return
			}
		case <-limit:
			t.Fatalf("the client was not %s within %s", want, waitLimit)
		}
	}
}

// Two agents in one pod (two developers' runs that each started one) must
// not both redirect a port: the newer redirect would silently take the
// older one's connections. The second agent refuses, naming the holder,
// and the port's connections stay with the holder.
func TestAPortHeldByAnotherAgentInThePodIsRefusedWithItsHolder(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *world) {
		second := *w
		second.startAgent(t)
		port := w.podLineApp(t, "pod").addr.Port()
		alice, bob := localLineApp(t, "alice"), localLineApp(t, "bob")
		ca := w.dialClient(t, "alice", client.Options{})
		cb := second.dialClient(t, "bob", client.Options{})
		held := subscribe(t, ca, client.Steal, port, config.HTTPFilter{HeaderFilter: "^x-user: alice$"}, alice)

		for _, mode := range []client.Mode{client.Steal, client.Mirror} {
			_, err := cb.Subscribe(context.Background(), client.SubscribeOptions{Mode: mode, Port: port, Filter: config.HTTPFilter{HeaderFilter: "^x-user: bob$"}, Dial: bob.dial})
			want := "already redirected by another trafficpolice agent in this pod, for " + w.label("alice") + " (steal)"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s through a second agent of a port the first one steals: %v, want %q", mode, err, want)
			}
		}
		w.wantRedirects(t, port)
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, port)).say(t, "who"); got != "pod: who" {
			// Not HTTP: alice's filter does not match, so the pod's app answers
			// through the first agent, whose redirect is still the only one.
			t.Errorf("after the refusals: %q, want the pod's app", got)
		}

		if err := held.Close(); err != nil {
			t.Fatal(err)
		}
		w.wantRedirects(t)
		subscribe(t, cb, client.Steal, port, wholeConnections, bob)
		if got := connect(t, w.peer, netip.AddrPortFrom(podAddr4, port)).say(t, "who"); got != "bob: who" {
			t.Errorf("once the first agent let the port go: %q, want bob's app through the second agent", got)
		}
	})
}
