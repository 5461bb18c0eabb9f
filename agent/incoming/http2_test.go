package incoming

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// These tests drive HTTP/2 on an HTTP-filtered port in-process (see
// steal_test.go): a real gRPC client talks to the agent's serveConn, the
// pod's app and the clients' apps are real gRPC servers. The same with
// real nat rules, through agent/client, is in subscribe_http2_test.go,
// which uses the exported helpers of this file (TaggedHealth, ServeGRPC,
// CheckCall, WatchCall): exported from a test file, they are the tests'
// only.

// TaggedHealth is a gRPC health service that says who answered: in a
// header ("served-by"), a trailer ("served-by-trailer") and, for the
// service "missing" and at the end of Watch, in its error status. Calls
// lists every call it takes ("METHOD SERVICE x-user=...").
type TaggedHealth struct {
	healthpb.UnimplementedHealthServer
	Tag   string
	calls chan string
	// release lets Watch go on after its first message: the test sends
	// on it once that message arrived, which it can only if the proxy
	// passed it on before the stream ended.
	Release chan struct{}
}

func NewTaggedHealth(tag string) *TaggedHealth {
	return &TaggedHealth{Tag: tag, calls: make(chan string, 64), Release: make(chan struct{}, 1)}
}

func (s *TaggedHealth) record(ctx context.Context, method, service string) {
	md, _ := metadata.FromIncomingContext(ctx)
	select {
	case s.calls <- fmt.Sprintf("%s %s x-user=%s", method, service, strings.Join(md.Get("x-user"), ",")):
	default:
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("served-by", s.Tag))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("served-by-trailer", s.Tag))
}

func (s *TaggedHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	s.record(ctx, "Check", req.Service)
	if req.Service == "missing" {
		return nil, status.Errorf(codes.NotFound, "%s knows no service %q", s.Tag, req.Service)
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (s *TaggedHealth) Watch(req *healthpb.HealthCheckRequest, st grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	s.record(st.Context(), "Watch", req.Service)
	if err := st.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
		return err
	}
	select {
	case <-s.Release:
	case <-st.Context().Done():
		return st.Context().Err()
	}
	for _, v := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVICE_UNKNOWN} {
		if err := st.Send(&healthpb.HealthCheckResponse{Status: v}); err != nil {
			return err
		}
	}
	return status.Errorf(codes.Aborted, "%s ends the watch", s.Tag)
}

func (s *TaggedHealth) NextCall(t testing.TB) string {
	t.Helper()
	select {
	case c := <-s.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("%s took no call within 10s", s.Tag)
	}
	return ""
}

// ServeGRPC serves h, and a bidirectional echo tagged as h, on ln until
// the test ends.
func ServeGRPC(t testing.TB, h *TaggedHealth, ln net.Listener) {
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	srv.RegisterService(&echoService, h.Tag)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
}

// podGRPCApp is the pod's own gRPC app on loopback.
func podGRPCApp(t testing.TB, h *TaggedHealth) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ServeGRPC(t, h, ln)
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// newGRPCTestClient is a client whose local app is a gRPC server with h.
func newGRPCTestClient(t testing.TB, tag string, mode proto.IncomingMode, h *TaggedHealth) *testClient {
	return newTestClientServing(t, tag, mode, proto.StreamWindow, func(ln net.Listener) { ServeGRPC(t, h, ln) })
}

// dialThroughAgent is a gRPC client whose connections the agent serves as
// if the nat rules had redirected them from dst; dials counts them.
func dialThroughAgent(t testing.TB, in *Service, dst netip.AddrPort, dials *atomic.Int32) *grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cc, err := grpc.NewClient("passthrough:///pod", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(dctx context.Context, _ string) (net.Conn, error) {
			client, agentEnd, err := loopbackPair()
			if err != nil {
				return nil, err
			}
			if dials != nil {
				dials.Add(1)
			}
			go in.serveConn(ctx, agentEnd, client.LocalAddr().(*net.TCPAddr).AddrPort(), dst)
			return client, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// loopbackPair is the two ends of a fresh loopback TCP connection.
func loopbackPair() (*net.TCPConn, *net.TCPConn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	a, err := ln.Accept()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c.(*net.TCPConn), a.(*net.TCPConn), nil
}

func callCtx(t testing.TB, kv ...string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if len(kv) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	return ctx
}

// CheckCall makes a unary Check and returns "SERVED-BY/TRAILER STATUS-CODE
// MESSAGE-OR-RESULT".
func CheckCall(t testing.TB, hc healthpb.HealthClient, service string, kv ...string) string {
	t.Helper()
	var header, trailer metadata.MD
	res, err := hc.Check(callCtx(t, kv...), &healthpb.HealthCheckRequest{Service: service}, grpc.Header(&header), grpc.Trailer(&trailer))
	who := strings.Join(header.Get("served-by"), ",") + "/" + strings.Join(trailer.Get("served-by-trailer"), ",")
	if err != nil {
		st := status.Convert(err)
		return fmt.Sprintf("%s %s %s", who, st.Code(), st.Message())
	}
	return fmt.Sprintf("%s OK %s", who, res.Status)
}

// WatchCall makes a server-streaming Watch, releasing the server after the
// first message, and returns what it got.
func WatchCall(t testing.TB, hc healthpb.HealthClient, server *TaggedHealth, kv ...string) string {
	t.Helper()
	st, err := hc.Watch(callCtx(t, kv...), &healthpb.HealthCheckRequest{Service: "w"})
	if err != nil {
		t.Fatalf("start a watch: %v", err)
	}
	var got []string
	for {
		res, err := st.Recv()
		if err != nil {
			s := status.Convert(err)
			got = append(got, fmt.Sprintf("%s %s", s.Code(), s.Message()))
			break
		}
		got = append(got, res.Status.String())
		if len(got) == 1 {
			// Only now may the server go on: the first message came
			// through while the stream was still open.
			server.Release <- struct{}{}
		}
	}
	header, _ := st.Header()
	return fmt.Sprintf("%s/%s %s", strings.Join(header.Get("served-by"), ","), strings.Join(st.Trailer().Get("served-by-trailer"), ","), strings.Join(got, " "))
}

func TestHTTP2FilterDecidesEachGRPCCall(t *testing.T) {
	in, _ := newTestIncoming(t)
	podHealth, aliceHealth, bobHealth := NewTaggedHealth("pod"), NewTaggedHealth("alice"), NewTaggedHealth("bob")
	pod := podGRPCApp(t, podHealth)
	alice := newGRPCTestClient(t, "alice", proto.ModeSteal, aliceHealth)
	bob := newGRPCTestClient(t, "bob", proto.ModeSteal, bobHealth)
	if _, err := in.subscribe(alice.t, steal(pod.Port(), "alice", header("^x-user: alice$"))); err != nil {
		t.Fatal(err)
	}
	if _, err := in.subscribe(bob.t, steal(pod.Port(), "bob", proto.HTTPFilter{Kind: proto.FilterPath, Pattern: "/Watch$"})); err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	cc := dialThroughAgent(t, in, pod, &dials)
	hc := healthpb.NewHealthClient(cc)

	for _, c := range []struct {
		service string
		md      []string
		want    string
		server  *TaggedHealth
	}{
		{"a", []string{"x-user", "alice"}, "alice/alice OK SERVING", aliceHealth},
		{"b", nil, "pod/pod OK SERVING", podHealth},
		{"c", []string{"x-user", "carol"}, "pod/pod OK SERVING", podHealth},
		// Error statuses and their trailers come back as sent, both ways.
		{"missing", []string{"x-user", "alice"}, `alice/alice NotFound alice knows no service "missing"`, aliceHealth},
		{"missing", nil, `pod/pod NotFound pod knows no service "missing"`, podHealth},
	} {
		if got := CheckCall(t, hc, c.service, c.md...); got != c.want {
			t.Errorf("Check %q with %v: %q, want %q", c.service, c.md, got, c.want)
		}
		want := fmt.Sprintf("Check %s x-user=", c.service)
		if len(c.md) > 0 {
			want += c.md[1]
		}
		if got := c.server.NextCall(t); got != want {
			t.Errorf("%s took %q, want %q", c.server.Tag, got, want)
		}
	}

	// Server streaming: the path filter sends every Watch to bob, the
	// first match (alice's header) wins over it.
	if got, want := WatchCall(t, hc, bobHealth), "bob/bob SERVING NOT_SERVING SERVICE_UNKNOWN Aborted bob ends the watch"; got != want {
		t.Errorf("a Watch: %q, want %q", got, want)
	}
	if got, want := WatchCall(t, hc, aliceHealth, "x-user", "alice"), "alice/alice SERVING NOT_SERVING SERVICE_UNKNOWN Aborted alice ends the watch"; got != want {
		t.Errorf("a Watch with x-user alice: %q, want %q", got, want)
	}
	bobHealth.NextCall(t)
	aliceHealth.NextCall(t)

	// Streams of one connection run side by side: a Watch held open at
	// bob's app while unary calls go to the pod and to alice.
	st, err := hc.Watch(callCtx(t), &healthpb.HealthCheckRequest{Service: "open"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("first message of the held watch: %v", err)
	}
	if got := CheckCall(t, hc, "during", "x-user", "alice"); got != "alice/alice OK SERVING" {
		t.Errorf("a Check beside an open Watch: %q", got)
	}
	if got := CheckCall(t, hc, "during"); got != "pod/pod OK SERVING" {
		t.Errorf("a Check beside an open Watch: %q", got)
	}
	bobHealth.Release <- struct{}{}
	for {
		if _, err := st.Recv(); err != nil {
			if status.Code(err) != codes.Aborted {
				t.Errorf("the held watch ended with %v, want Aborted", err)
			}
			break
		}
	}
	// Bidirectional streaming, message by message, both ways.
	if got, want := ChatCall(t, cc, []string{"1", "2", "3"}, "x-user", "alice"), "alice:1 alice:2 alice:3"; got != want {
		t.Errorf("a stolen chat: %q, want %q", got, want)
	}
	if got, want := ChatCall(t, cc, []string{"1", "2", "3"}), "pod:1 pod:2 pod:3"; got != want {
		t.Errorf("the pod's chat: %q, want %q", got, want)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the gRPC client made %d connections, want all calls on one", n)
	}
}

func TestHTTP2MirrorCopiesMatchingCalls(t *testing.T) {
	in, _ := newTestIncoming(t)
	podHealth, daveHealth := NewTaggedHealth("pod"), NewTaggedHealth("dave")
	pod := podGRPCApp(t, podHealth)
	dave := newGRPCTestClient(t, "dave", proto.ModeMirror, daveHealth)
	if _, err := in.subscribe(dave.t, proto.Subscribe{Mode: proto.ModeMirror, Port: pod.Port(), Owner: "dave", Label: "dave@test", Filter: header("^x-copy: dave$")}); err != nil {
		t.Fatal(err)
	}
	hc := healthpb.NewHealthClient(dialThroughAgent(t, in, pod, nil))
	if got := CheckCall(t, hc, "plain"); got != "pod/pod OK SERVING" {
		t.Errorf("a call the mirror does not want: %q", got)
	}
	podHealth.NextCall(t)
	if got := CheckCall(t, hc, "copied", "x-copy", "dave"); got != "pod/pod OK SERVING" {
		t.Errorf("a mirrored call: %q, want the pod's answer", got)
	}
	podHealth.NextCall(t)
	if got := daveHealth.NextCall(t); got != "Check copied x-user=" {
		t.Errorf("the mirror's app took %q, want the copy of the matching call only", got)
	}
}

func TestHTTP2PrefaceIsToldFromHTTP1(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{http2.ClientPreface, true},
		{http2.ClientPreface + "\x00\x00\x00\x04", true},
		{"POST / HTTP/1.1\r\n", false},
		{"PRI /x HTTP/1.1\r\n\r\n", false},
		{"PRI * HTTP/2.0\r\n\r\nXX", false},
	} {
		got, err := peekH2Preface(bufio.NewReader(strings.NewReader(c.in)))
		if got != c.want || err != nil {
			t.Errorf("peekH2Preface(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	// Cut short: not decided, the error says why.
	if got, err := peekH2Preface(bufio.NewReader(strings.NewReader("PRI * HTTP/2"))); got || err != io.EOF {
		t.Errorf("a preface cut short: %v, %v; want false, EOF", got, err)
	}
}

// TestHTTP2WithoutBackendAnswers502 sends a stolen call to a client whose
// app does not speak HTTP/2: the call fails with the gateway's status,
// the connection lives on for the pod's calls.
func TestHTTP2BackendThatIsNotHTTP2Gets502(t *testing.T) {
	in, _ := newTestIncoming(t)
	podHealth := NewTaggedHealth("pod")
	pod := podGRPCApp(t, podHealth)
	http1 := newTestClient(t, "http1", proto.ModeSteal)
	if _, err := in.subscribe(http1.t, steal(pod.Port(), "http1", header("^x-user: old$"))); err != nil {
		t.Fatal(err)
	}
	hc := healthpb.NewHealthClient(dialThroughAgent(t, in, pod, nil))
	if got := CheckCall(t, hc, "x", "x-user", "old"); !strings.Contains(got, "Unavailable") || !strings.Contains(got, "502") {
		t.Errorf("a call stolen by an app that speaks HTTP/1 only: %q, want Unavailable from a 502", got)
	}
	if got := CheckCall(t, hc, "y"); got != "pod/pod OK SERVING" {
		t.Errorf("the pod's call after a failed stolen one: %q", got)
	}
}

// BenchmarkGRPCUnary measures unary gRPC calls per second on one client
// connection: straight to the app, through the agent to the pod's app
// (the filter does not match), and stolen through the agent and a tunnel
// to a client's app (it matches).
func BenchmarkGRPCUnary(b *testing.B) {
	rules := &fakeRules{ports: map[uint16]bool{}}
	in := newService(slog.New(slog.DiscardHandler), rules, Options{Linger: 5 * time.Second, OpenTimeout: 5 * time.Second, DialTimeout: 5 * time.Second})
	in.dial = func(ctx context.Context, dst netip.AddrPort) (*net.TCPConn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", dst.String())
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
	b.Cleanup(in.close)
	pod := podGRPCApp(b, NewTaggedHealth("pod"))
	alice := newGRPCTestClient(b, "alice", proto.ModeSteal, NewTaggedHealth("alice"))
	if _, err := in.subscribe(alice.t, steal(pod.Port(), "alice", header("^x-user: alice$"))); err != nil {
		b.Fatal(err)
	}
	direct, err := grpc.NewClient(pod.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { direct.Close() })
	through := dialThroughAgent(b, in, pod, nil)
	for _, c := range []struct {
		name string
		cc   *grpc.ClientConn
		md   []string
	}{
		{"direct", direct, nil},
		{"agent-to-pod", through, nil},
		{"stolen", through, []string{"x-user", "alice"}},
	} {
		hc := healthpb.NewHealthClient(c.cc)
		ctx := context.Background()
		if len(c.md) > 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, c.md...)
		}
		req := &healthpb.HealthCheckRequest{Service: "bench"}
		// One call after another: the latency of a call.
		b.Run(c.name+"/serial", func(b *testing.B) {
			for b.Loop() {
				if _, err := hc.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
		// 16 calls in flight per CPU on the one connection: its rate.
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := hc.Check(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}

// TestHTTP2PodAppGoingAwayKeepsTheCallerConnection restarts the pod's app
// gracefully (GOAWAY to the agent) between two calls of one caller
// connection: the agent's next call goes on a new connection to the new
// app, and the caller's connection lives on.
func TestHTTP2PodAppGoingAwayKeepsTheCallerConnection(t *testing.T) {
	in, _ := newTestIncoming(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pod := ln.Addr().(*net.TCPAddr).AddrPort()
	first := grpc.NewServer()
	healthpb.RegisterHealthServer(first, NewTaggedHealth("pod-1"))
	first.RegisterService(&echoService, "pod-1")
	go func() { _ = first.Serve(ln) }()
	t.Cleanup(first.Stop)
	alice := newGRPCTestClient(t, "alice", proto.ModeSteal, NewTaggedHealth("alice"))
	if _, err := in.subscribe(alice.t, steal(pod.Port(), "alice", header("^x-user: alice$"))); err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	hc := healthpb.NewHealthClient(dialThroughAgent(t, in, pod, &dials))
	if got := CheckCall(t, hc, "before"); got != "pod-1/pod-1 OK SERVING" {
		t.Fatalf("before the restart: %q", got)
	}

	first.GracefulStop() // GOAWAY, then the connection closes
	ln2, err := net.Listen("tcp", pod.String())
	if err != nil {
		t.Fatalf("listen again at %s: %v", pod, err)
	}
	ServeGRPC(t, NewTaggedHealth("pod-2"), ln2)

	if got := CheckCall(t, hc, "after"); got != "pod-2/pod-2 OK SERVING" {
		t.Errorf("after the pod's app restarted: %q, want the new app's answer", got)
	}
	if got := CheckCall(t, hc, "stolen", "x-user", "alice"); got != "alice/alice OK SERVING" {
		t.Errorf("a stolen call on the same connection: %q", got)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the caller made %d connections, want its one to live on", n)
	}
}

// TestHTTP2SlowMirrorNeverSlowsThePod sends a large HTTP/2 request that
// a mirror copies to a client that never reads: the pod's app gets all
// of it, the copy is dropped and counted.
func TestHTTP2SlowMirrorNeverSlowsThePod(t *testing.T) {
	in, _ := newTestIncoming(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &h2c, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d %s", n, r.Proto)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	pod := ln.Addr().(*net.TCPAddr).AddrPort()
	stuck := newTestClient(t, "stuck", proto.ModeMirror)
	if _, err := in.subscribe(stuck.t, proto.Subscribe{Mode: proto.ModeMirror, Port: pod.Port(), Owner: "s", Label: "stuck@test", Filter: header("^x-copy: yes$")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	caller := &http.Client{Transport: &http.Transport{Protocols: &h2c, DialContext: func(context.Context, string, string) (net.Conn, error) {
		client, agentEnd, err := loopbackPair()
		if err != nil {
			return nil, err
		}
		go in.serveConn(ctx, agentEnd, client.LocalAddr().(*net.TCPAddr).AddrPort(), pod)
		return client, nil
	}}}
	const total = 32 << 20 // more than the stream windows and the copy's queue
	req, err := http.NewRequestWithContext(callCtx(t), "POST", "http://pod/upload", io.LimitReader(zeros{}, total))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Copy", "yes")
	res, err := caller.Do(req)
	if err != nil {
		t.Fatalf("the pod's path stalled behind a mirror that does not read: %v", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if want := fmt.Sprintf("got %d HTTP/2.0", total); err != nil || string(body) != want {
		t.Fatalf("the pod's app answered %q, %v; want %q", body, err, want)
	}
	if in.mirrorDrops.Load() == 0 {
		t.Error("the copy that could not keep up was not counted as dropped")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// echoService is a bidirectional streaming gRPC service without protoc:
// messages are raw bytes (rawCodec), each answered at once with
// "TAG:MESSAGE", the server's tag being its implementation value.
var echoService = grpc.ServiceDesc{
	ServiceName: "trafficpolice.test.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Chat",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(srv any, st grpc.ServerStream) error {
			for {
				var m []byte
				if err := st.RecvMsg(&m); err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
				out := []byte(srv.(string) + ":" + string(m))
				if err := st.SendMsg(&out); err != nil {
					return err
				}
			}
		},
	}},
}

// rawCodec carries gRPC messages as the bytes they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

func init() { encoding.RegisterCodec(rawCodec{}) }

// ChatCall sends each message on one bidirectional stream and waits for
// its answer before sending the next: a proxy that held either direction
// back would stall it. It returns the answers.
func ChatCall(t testing.TB, cc *grpc.ClientConn, messages []string, kv ...string) string {
	t.Helper()
	st, err := cc.NewStream(callCtx(t, kv...), &echoService.Streams[0], "/trafficpolice.test.Echo/Chat", grpc.CallContentSubtype("raw"))
	if err != nil {
		t.Fatalf("open a chat: %v", err)
	}
	var got []string
	for _, m := range messages {
		b := []byte(m)
		if err := st.SendMsg(&b); err != nil {
			t.Fatalf("send %q: %v", m, err)
		}
		var answer []byte
		if err := st.RecvMsg(&answer); err != nil {
			t.Fatalf("the answer to %q: %v", m, err)
		}
		got = append(got, string(answer))
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var extra []byte
	if err := st.RecvMsg(&extra); err != io.EOF {
		t.Errorf("after the last answer: %q, %v; want the end of the stream", extra, err)
	}
	return strings.Join(got, " ")
}

func TestH2CUpgradeIsToldByItsHeaders(t *testing.T) {
	settings := base64.RawURLEncoding.EncodeToString([]byte{0, 3, 0, 0, 0, 100})
	for _, c := range []struct {
		head string
		want bool
	}{
		{"GET / HTTP/1.1\r\nHost: p\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: " + settings + "\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: p\r\nconnection: upgrade\r\nconnection: http2-settings\r\nupgrade: websocket, H2C\r\nhttp2-settings: " + settings + "\r\n\r\n", true},
		// Not an h2c upgrade: HTTP/1.0, another protocol, settings not
		// named in Connection, missing, twice, or not base64url.
		{"GET / HTTP/1.0\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: " + settings + "\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: websocket\r\nHTTP2-Settings: " + settings + "\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: " + settings + "\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: " + settings + "\r\nHTTP2-Settings: " + settings + "\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: !!\r\n\r\n", false},
	} {
		head, _, err := readRequestHead(bufio.NewReader(strings.NewReader(c.head)))
		if err != nil {
			t.Fatalf("%q: %v", c.head, err)
		}
		got, ok := h2cUpgrade(head)
		if ok != c.want || ok && base64.RawURLEncoding.EncodeToString(got) != settings {
			t.Errorf("h2cUpgrade(%q) = %x, %v; want %v", c.head, got, ok, c.want)
		}
	}
}

// TestHTTP2HeaderListIsBounded sends a call with more metadata than the
// agent takes: it fails, and the connection serves the next call.
func TestHTTP2HeaderListIsBounded(t *testing.T) {
	in, _ := newTestIncoming(t)
	pod := podGRPCApp(t, NewTaggedHealth("pod"))
	alice := newGRPCTestClient(t, "alice", proto.ModeSteal, NewTaggedHealth("alice"))
	if _, err := in.subscribe(alice.t, steal(pod.Port(), "alice", header("^x-user: alice$"))); err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	hc := healthpb.NewHealthClient(dialThroughAgent(t, in, pod, &dials))
	if got := CheckCall(t, hc, "big", "x-user", "alice", "x-big", strings.Repeat("b", h2MaxHeaderList)); !strings.Contains(got, "header list size") {
		t.Errorf("a call with %d bytes of metadata: %q, want it refused for its header list size", h2MaxHeaderList, got)
	}
	if got := CheckCall(t, hc, "small", "x-user", "alice"); got != "alice/alice OK SERVING" {
		t.Errorf("the next call: %q", got)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the gRPC client made %d connections, want one", n)
	}
}
