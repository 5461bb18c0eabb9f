package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trafficpolice/trafficpolice/test/cluster"
)

// grpcPort is where the pod's gRPC app (grpctag) listens, and the
// sandboxed one.
const grpcPort = 9997

// grpcClient is a gRPC client in the client pod whose connections go to
// addr.
func (w *incomingWorld) grpcClient(t *testing.T, addr string) healthpb.HealthClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///pod", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return w.client.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// grpcCheck makes a unary call and returns "HEADER/TRAILER CODE RESULT".
func grpcCheck(t *testing.T, hc healthpb.HealthClient, service string, md ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), md...), 10*time.Second)
	defer cancel()
	var header, trailer metadata.MD
	res, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.Header(&header), grpc.Trailer(&trailer))
	who := strings.Join(header.Get("served-by"), ",") + "/" + strings.Join(trailer.Get("served-by-trailer"), ",")
	if err != nil {
		s := status.Convert(err)
		return fmt.Sprintf("%s %s %s", who, s.Code(), s.Message())
	}
	return fmt.Sprintf("%s OK %s", who, res.Status)
}

// grpcWatch makes a server-streaming call and returns what came.
func grpcWatch(t *testing.T, hc healthpb.HealthClient, md ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), md...), 10*time.Second)
	defer cancel()
	st, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "w"})
	if err != nil {
		return "error: " + err.Error()
	}
	var got []string
	for {
		res, err := st.Recv()
		if err != nil {
			s := status.Convert(err)
			got = append(got, s.Code().String()+" "+s.Message())
			break
		}
		got = append(got, res.Status.String())
	}
	header, _ := st.Header()
	return fmt.Sprintf("%s/%s %s", strings.Join(header.Get("served-by"), ","), strings.Join(st.Trailer().Get("served-by-trailer"), ","), strings.Join(got, " "))
}

func TestIncomingGRPCByHeader(t *testing.T) {
	w := newIncomingWorld(t)
	app := cluster.BuildApp(t, "./test/e2e/testdata/grpctag")
	w.target.Start(t, []string{app, fmt.Sprintf(":%d", grpcPort), "pod"})
	w.target.WaitPort(t, grpcPort, 5*time.Second)
	addr := fmt.Sprintf("%s:%d", w.target.IP(), grpcPort)
	cfg := writeConfig(t, `{"feature":{"network":{"incoming":{"mode":"steal","http_filter":{"header_filter":"^x-user: alice$"}}}}}`)
	r := w.start(t, "grpc", nil, []string{"-f", cfg}, app, fmt.Sprintf(":%d", grpcPort), "local")
	r.waitStderr(t, fmt.Sprintf("✓ stealing pod port %d → app :%d", grpcPort, grpcPort), 20*time.Second)

	// One client connection: each call goes where its metadata says.
	hc := w.grpcClient(t, addr)
	for _, c := range []struct {
		service string
		md      []string
		want    string
	}{
		{"a", []string{"x-user", "alice"}, "local/local OK SERVING"},
		{"b", nil, "pod/pod OK SERVING"},
		{"c", []string{"x-user", "bob"}, "pod/pod OK SERVING"},
		{"missing", []string{"x-user", "alice"}, `local/local NotFound local knows no service "missing"`},
		{"missing", nil, `pod/pod NotFound pod knows no service "missing"`},
	} {
		if got := grpcCheck(t, hc, c.service, c.md...); got != c.want {
			t.Errorf("Check %q with %v: %q, want %q", c.service, c.md, got, c.want)
		}
	}
	if got, want := grpcWatch(t, hc, "x-user", "alice"), "local/local SERVING NOT_SERVING SERVICE_UNKNOWN Aborted local ends the watch"; got != want {
		t.Errorf("a stolen Watch: %q, want %q", got, want)
	}
	if got, want := grpcWatch(t, hc), "pod/pod SERVING NOT_SERVING SERVICE_UNKNOWN Aborted pod ends the watch"; got != want {
		t.Errorf("the pod's Watch: %q, want %q", got, want)
	}

	// curl, in HTTP/2 with prior knowledge and by h2c upgrade.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--http2-prior-knowledge", "-H", "x-user: alice", "http://" + addr + "/pk"}, "local GET /pk HTTP/2.0"},
		{[]string{"--http2-prior-knowledge", "http://" + addr + "/pk"}, "pod GET /pk HTTP/2.0"},
		{[]string{"--http2", "-H", "x-user: alice", "http://" + addr + "/up"}, "local GET /up HTTP/2.0"},
		{[]string{"--http2", "http://" + addr + "/up"}, "pod GET /up HTTP/2.0"},
	} {
		out, err := w.client.Run(t, append([]string{"curl", "-sS", "--max-time", "10"}, c.args...)...)
		if err != nil || strings.TrimSpace(out) != c.want {
			t.Errorf("curl %s: %q, %v; want %q", strings.Join(c.args, " "), out, err, c.want)
		}
	}

	r.stop(t)
	for _, want := range []string{"local got Check a x-user=alice", "local got Check missing x-user=alice", "local got Watch w x-user=alice"} {
		contains(t, r.stdout.String(), want)
	}
	if n := strings.Count(r.stdout.String(), "local got"); n != 3 {
		t.Errorf("the local app took %d calls, want 3", n)
	}
	if got := grpcCheck(t, w.grpcClient(t, addr), "after", "x-user", "alice"); got != "pod/pod OK SERVING" {
		t.Errorf("after the run: %q, want the pod's app", got)
	}
	w.wantNoRules(t)
}
