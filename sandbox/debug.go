package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"expvar"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"runtime"
	"time"

	"github.com/trafficpolice/trafficpolice/router"
)

// serveDebug serves net/http/pprof under /debug/pprof/ and expvar-style
// JSON under /debug/vars (the process's expvars plus "router": the
// router's counters, and "goroutines") on addr, which must be on the
// host's loopback: profiles and counters are for the person running the
// sandbox, never for the network. It stops when ctx ends; the returned
// address is the one actually bound (addr may ask for port 0).
func serveDebug(ctx context.Context, addr string, rt *router.Router, log *slog.Logger) (net.Addr, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("debug listen address %q is invalid: want HOST:PORT on loopback, e.g. 127.0.0.1:6060: %w", addr, err)
	}
	if ip, err := netip.ParseAddr(host); (err != nil && host != "localhost") || (err == nil && !ip.IsLoopback()) {
		return nil, fmt.Errorf("debug listen address %q is invalid: want a loopback host (127.0.0.1, [::1] or localhost), not %q", addr, host)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/vars", func(w http.ResponseWriter, _ *http.Request) {
		// Built per request instead of expvar.Publish: a process may run
		// several sandboxes (tests), and Publish panics on a second name.
		vars := map[string]json.RawMessage{}
		expvar.Do(func(kv expvar.KeyValue) { vars[kv.Key] = json.RawMessage(kv.Value.String()) })
		st, _ := json.Marshal(rt.Stats())
		vars["router"] = st
		vars["goroutines"] = json.RawMessage(fmt.Sprint(runtime.NumGoroutine()))
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(vars)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("debug server stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	return ln.Addr(), nil
}
