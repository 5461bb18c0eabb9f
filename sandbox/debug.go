package sandbox

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"

	"github.com/trafficpolice/trafficpolice/debugsrv"
	"github.com/trafficpolice/trafficpolice/router"
)

// serveDebug serves the debug server (package debugsrv) with the router's
// counters as "router" in /debug/vars.
func serveDebug(ctx context.Context, addr string, rt *router.Router, log *slog.Logger) (net.Addr, error) {
	return debugsrv.Serve(ctx, addr, func(vars map[string]json.RawMessage) {
		st, _ := json.Marshal(rt.Stats())
		vars["router"] = st
	}, log)
}
