// Package debugsrv serves a process's profiles and counters for the
// person running it: net/http/pprof under /debug/pprof/ and expvar-style
// JSON under /debug/vars (the process's expvars, memstats among them,
// "goroutines", "sched_latency_us" and what the caller adds), on the
// loopback only.
package debugsrv

import (
	"context"
	"encoding/json"
	"errors"
	"expvar"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"time"
)

// Serve serves on addr, a HOST:PORT on loopback (port 0 picks one), until
// ctx ends, and returns the address bound. vars, if set, adds entries to
// /debug/vars on each request.
func Serve(ctx context.Context, addr string, vars func(map[string]json.RawMessage), log *slog.Logger) (net.Addr, error) {
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
	mux.HandleFunc("/debug/vars", func(w http.ResponseWriter, r *http.Request) {
		// ?gc=1 collects garbage first, so memstats show what is live:
		// twice, as a sync.Pool's items survive one collection.
		if r.URL.Query().Get("gc") == "1" {
			runtime.GC()
			runtime.GC()
		}
		// Built per request instead of expvar.Publish: a process may run
		// several servers (tests), and Publish panics on a second name.
		all := map[string]json.RawMessage{}
		expvar.Do(func(kv expvar.KeyValue) { all[kv.Key] = json.RawMessage(kv.Value.String()) })
		all["goroutines"] = json.RawMessage(fmt.Sprint(runtime.NumGoroutine()))
		if b, err := json.Marshal(schedLatency()); err == nil {
			all["sched_latency_us"] = b
		}
		if vars != nil {
			vars(all)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(all)
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

// SchedLatency summarises how long goroutines waited, runnable, before they
// ran, since the process started (runtime/metrics' /sched/latencies), in
// µs: a latency tail that is scheduling shows here.
type SchedLatency struct {
	Count               uint64
	P50, P99, P999, Max float64
}

func schedLatency() SchedLatency {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return SchedLatency{}
	}
	h := s[0].Value.Float64Histogram()
	var total uint64
	for _, n := range h.Counts {
		total += n
	}
	// at is the upper bound, in µs, of the bucket holding quantile q (of
	// the last non-empty bucket for q = 1; its lower bound when the upper
	// is +Inf).
	at := func(q float64) float64 {
		var seen uint64
		for i, n := range h.Counts {
			seen += n
			if n > 0 && float64(seen) >= q*float64(total) {
				if b := h.Buckets[i+1]; !math.IsInf(b, 1) {
					return b * 1e6
				}
				return h.Buckets[i] * 1e6
			}
		}
		return 0
	}
	return SchedLatency{Count: total, P50: at(0.5), P99: at(0.99), P999: at(0.999), Max: at(1)}
}
