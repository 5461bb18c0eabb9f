package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// shutdownGrace bounds how long in-flight requests may finish after the
// context ends.
const shutdownGrace = 5 * time.Second

// Run serves h on addr with an access log until ctx ends, then shuts the
// server down gracefully. It logs the address it really listens on, so a
// caller that asked for port 0 can find it.
func Run(ctx context.Context, log *Logger, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on --listen %q: %w", addr, err)
	}
	return Serve(ctx, log, ln, h)
}

// Serve is Run on a listener the caller opened; it closes ln.
func Serve(ctx context.Context, log *Logger, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           AccessLog(log, h),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	log.Infof("listening on %s", ln.Addr())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	log.Infof("stopping")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down server on %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	}
	return nil
}

// AccessLog logs one line per request after it is answered:
// peer "METHOD PATH PROTO" status bytes seconds.
// Tests read the peer from it to see where a request came from.
func AccessLog(log *Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		log.accessf("%s %q %d %d %.6f", r.RemoteAddr,
			r.Method+" "+r.URL.RequestURI()+" "+r.Proto, rec.status, rec.bytes,
			time.Since(start).Seconds())
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.wrote = true
	n, err := s.ResponseWriter.Write(p)
	s.bytes += n
	return n, err
}
