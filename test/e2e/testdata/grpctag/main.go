// Command grpctag is the gRPC app of the incoming-traffic tests, run in
// the target pod (tag "pod") and in sandboxes: a gRPC health service
// (plain HTTP/2 with prior knowledge) that says who answered, in a
// header ("served-by") and a trailer ("served-by-trailer"), and prints
// "TAG got METHOD SERVICE x-user=VALUE" for each call. Check answers
// SERVING, or NotFound for the service "missing"; Watch sends SERVING,
// NOT_SERVING and SERVICE_UNKNOWN, then ends with Aborted. Requests that
// are not gRPC (curl's, in HTTP/1.1 or HTTP/2 with prior knowledge) are
// answered "TAG METHOD PATH PROTO".
//
//	grpctag ADDR TAG
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type server struct {
	healthpb.UnimplementedHealthServer
	tag string
	mu  sync.Mutex // one line at a time on stdout
}

func (s *server) record(ctx context.Context, method, service string) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	fmt.Printf("%s got %s %s x-user=%s\n", s.tag, method, service, strings.Join(md.Get("x-user"), ","))
	s.mu.Unlock()
	_ = grpc.SetHeader(ctx, metadata.Pairs("served-by", s.tag))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("served-by-trailer", s.tag))
}

func (s *server) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	s.record(ctx, "Check", req.Service)
	if req.Service == "missing" {
		return nil, status.Errorf(codes.NotFound, "%s knows no service %q", s.tag, req.Service)
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (s *server) Watch(req *healthpb.HealthCheckRequest, st grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	s.record(st.Context(), "Watch", req.Service)
	for _, v := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVICE_UNKNOWN} {
		if err := st.Send(&healthpb.HealthCheckResponse{Status: v}); err != nil {
			return err
		}
	}
	return status.Errorf(codes.Aborted, "%s ends the watch", s.tag)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: grpctag ADDR TAG")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpctag:", err)
		os.Exit(1)
	}
	tag := os.Args[2]
	rpc := grpc.NewServer()
	healthpb.RegisterHealthServer(rpc, &server{tag: tag})
	// net/http serves both, so that one port speaks gRPC and plain
	// HTTP/2 in clear text as a gRPC gateway's does.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			rpc.ServeHTTP(w, r)
			return
		}
		fmt.Fprintf(w, "%s %s %s %s\n", tag, r.Method, r.URL.Path, r.Proto)
	})}
	fmt.Printf("%s listening on %s\n", tag, ln.Addr())
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "grpctag:", err)
		os.Exit(1)
	}
}
