package debugsrv

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// TestVarsCarrySchedulingLatency: /debug/vars serves the process's
// scheduling latencies beside what the caller adds, and refuses a
// non-loopback address.
func TestVarsCarrySchedulingLatency(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := Serve(ctx, "0.0.0.0:0", nil, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("Serve on 0.0.0.0: %v; want an error asking for loopback", err)
	}
	addr, err := Serve(ctx, "127.0.0.1:0", func(m map[string]json.RawMessage) { m["mine"] = json.RawMessage("1") }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/debug/vars")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var vars struct {
		Mine  int          `json:"mine"`
		Sched SchedLatency `json:"sched_latency_us"`
	}
	if err := json.Unmarshal(body, &vars); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if vars.Mine != 1 {
		t.Errorf("the caller's var is missing: %s", body)
	}
	s := vars.Sched
	if s.Count == 0 || s.P50 <= 0 || s.P50 > s.P99 || s.P99 > s.P999 || s.P999 > s.Max {
		t.Errorf("sched_latency_us %+v: want a count and ordered, positive percentiles", s)
	}
}
