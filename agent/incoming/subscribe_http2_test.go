package incoming_test

// gRPC (HTTP/2 with prior knowledge) under HTTP filters as a user gets
// it: the world of world_test.go, a real gRPC client in the peer, the
// pod's gRPC app in the pod, clients' gRPC apps on the host's loopback.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/incoming"
	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/config"
)

// grpcFromPeer is a gRPC client in the peer whose connections go to to.
func (w *world) grpcFromPeer(t *testing.T, to netip.AddrPort) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///pod", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return dialFrom(w.peer, to) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// grpcApp serves h on ln and returns it as an app of the test.
func grpcApp(t *testing.T, h *incoming.TaggedHealth, ln net.Listener) *app {
	a := newApp(t, h.Tag, ln)
	incoming.ServeGRPC(t, h, ln)
	return a
}

func TestHTTP2FilteredStealAndMirrorOfGRPCCalls(t *testing.T) {
	forBothBackends(t, func(t *testing.T, w *world) {
		podH, aliceH, daveH := incoming.NewTaggedHealth("pod"), incoming.NewTaggedHealth("alice"), incoming.NewTaggedHealth("dave")
		pod := grpcApp(t, podH, w.podListener(t))
		port := pod.addr.Port()
		alice, dave := grpcApp(t, aliceH, localListener(t)), grpcApp(t, daveH, localListener(t))
		stolen := subscribe(t, w.dialClient(t, "alice", client.Options{}), client.Steal, port, config.HTTPFilter{HeaderFilter: "^x-user: alice$"}, alice)
		copied := subscribe(t, w.dialClient(t, "dave", client.Options{}), client.Mirror, port, config.HTTPFilter{HeaderFilter: "^x-copy: dave$"}, dave)
		w.wantRedirects(t, port)

		for _, to := range []netip.AddrPort{netip.AddrPortFrom(podAddr4, port), netip.AddrPortFrom(podAddr6, port)} {
			cc := w.grpcFromPeer(t, to)
			hc := healthpb.NewHealthClient(cc)
			// Unary, both ways, with an error status and trailers.
			for _, c := range []struct {
				service string
				md      []string
				want    string
				server  *incoming.TaggedHealth
			}{
				{"a", []string{"x-user", "alice"}, "alice/alice OK SERVING", aliceH},
				{"b", []string{"x-user", "bob"}, "pod/pod OK SERVING", podH},
				{"missing", []string{"x-user", "alice"}, `alice/alice NotFound alice knows no service "missing"`, aliceH},
				{"missing", nil, `pod/pod NotFound pod knows no service "missing"`, podH},
			} {
				if got := incoming.CheckCall(t, hc, c.service, c.md...); got != c.want {
					t.Errorf("to %s, Check %q with %v: %q, want %q", to, c.service, c.md, got, c.want)
				}
				c.server.NextCall(t)
			}
			// Server streaming, both ways: each message as it is sent.
			if got, want := incoming.WatchCall(t, hc, aliceH, "x-user", "alice"), "alice/alice SERVING NOT_SERVING SERVICE_UNKNOWN Aborted alice ends the watch"; got != want {
				t.Errorf("to %s, a stolen Watch: %q, want %q", to, got, want)
			}
			aliceH.NextCall(t)
			if got, want := incoming.WatchCall(t, hc, podH), "pod/pod SERVING NOT_SERVING SERVICE_UNKNOWN Aborted pod ends the watch"; got != want {
				t.Errorf("to %s, the pod's Watch: %q, want %q", to, got, want)
			}
			podH.NextCall(t)
			// Bidirectional streaming, message by message, both ways.
			if got, want := incoming.ChatCall(t, cc, []string{"a", "b"}, "x-user", "alice"), "alice:a alice:b"; got != want {
				t.Errorf("to %s, a stolen chat: %q, want %q", to, got, want)
			}
			if got, want := incoming.ChatCall(t, cc, []string{"a", "b"}), "pod:a pod:b"; got != want {
				t.Errorf("to %s, the pod's chat: %q, want %q", to, got, want)
			}
			// A mirrored call: the pod answers, dave's app gets a copy.
			if got := incoming.CheckCall(t, hc, "copied", "x-copy", "dave"); got != "pod/pod OK SERVING" {
				t.Errorf("to %s, a mirrored call: %q, want the pod's answer", to, got)
			}
			podH.NextCall(t)
			if got := daveH.NextCall(t); got != "Check copied x-user=" {
				t.Errorf("to %s, dave's app took %q, want the copy", to, got)
			}
			for _, a := range []*app{alice, dave} {
				if got := a.nextHanded(t); got.Dst != to || got.Port != port {
					t.Errorf("%s's Dial was told %+v, want the destination %s", a.tag, got, to)
				}
			}

			if to.Addr().Is6() {
				// Given back: the next connection's calls go to the pod's
				// app. (Connections still open lose their redirect with the
				// rules, in the kernel, as HTTP/1 ones do.)
				if err := stolen.Close(); err != nil {
					t.Fatal(err)
				}
				if err := copied.Close(); err != nil {
					t.Fatal(err)
				}
				w.wantRedirects(t)
				if got := incoming.CheckCall(t, healthpb.NewHealthClient(w.grpcFromPeer(t, to)), "after", "x-user", "alice"); got != "pod/pod OK SERVING" {
					t.Errorf("after the steal ended: %q, want the pod's app", got)
				}
			}
		}
	})
}

// serveH2C answers every request, over HTTP/1.1 or HTTP/2 with prior
// knowledge (no h2c upgrade: net/http's server has none), with "TAG
// METHOD PATH BODYLENGTH PROTO".
func serveH2C(t *testing.T, tag string, ln net.Listener) *app {
	a := newApp(t, tag, ln)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(rw, "%s %s %s %d %s", tag, r.Method, r.URL.Path, n, r.Proto)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

// curl runs curl in the peer and returns the body and the HTTP version
// it spoke.
func (w *world) curl(t *testing.T, args ...string) string {
	t.Helper()
	var out []byte
	err := inNS(w.peer, func() (err error) {
		out, err = exec.Command("curl", append([]string{"-sS", "--max-time", "10", "-w", " (curl spoke %{http_version})"}, args...)...).Output()
		return err
	})
	if err != nil {
		t.Fatalf("curl %s: %v (%s)", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestHTTP2CurlPriorKnowledgeAndUpgrade(t *testing.T) {
	requireCommands(t, "curl", "curl")
	w := newWorld(t, nat.NFTables)
	h2Pod, h1Pod := serveH2C(t, "pod", w.podListener(t)), w.podHTTPApp(t, "pod1")
	alice := serveH2C(t, "alice", localListener(t))
	c := w.dialClient(t, "alice", client.Options{})
	for _, p := range []uint16{h2Pod.addr.Port(), h1Pod.addr.Port()} {
		subscribe(t, c, client.Steal, p, config.HTTPFilter{HeaderFilter: "^x-user: alice$"}, alice)
	}
	url := func(p *app, path string) string {
		return fmt.Sprintf("http://%s%s", netip.AddrPortFrom(podAddr4, p.addr.Port()), path)
	}
	url6 := func(p *app, path string) string {
		return fmt.Sprintf("http://%s%s", netip.AddrPortFrom(podAddr6, p.addr.Port()), path)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--http2-prior-knowledge", "-H", "x-user: alice", url(h2Pod, "/pk")}, "alice GET /pk 0 HTTP/2.0 (curl spoke 2)"},
		{[]string{"--http2-prior-knowledge", url6(h2Pod, "/pk")}, "pod GET /pk 0 HTTP/2.0 (curl spoke 2)"},
		// The upgrade is the agent's to take, since the pod's app speaks
		// h2c: the request (stream 1) and its body go by the filter.
		{[]string{"--http2", "-H", "x-user: alice", "--data-binary", "abc", url(h2Pod, "/up")}, "alice POST /up 3 HTTP/2.0 (curl spoke 2)"},
		{[]string{"--http2", url6(h2Pod, "/up")}, "pod GET /up 0 HTTP/2.0 (curl spoke 2)"},
		// The pod's app speaks HTTP/1 only: the upgrade is not taken,
		// the request goes on in HTTP/1.1, decided as any.
		{[]string{"--http2", url(h1Pod, "/old")}, "pod1 GET /old 0 (curl spoke 1.1)"},
		{[]string{"--http2", "-H", "x-user: alice", url(h1Pod, "/old")}, "alice GET /old 0 HTTP/1.1 (curl spoke 1.1)"},
	} {
		if got := w.curl(t, c.args...); got != c.want {
			t.Errorf("curl %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}
}
