package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

var (
	errBlocked  = errors.New("blocked by the outgoing filter")
	errNoAgent  = errors.New("no agent is configured: remote flows are refused")
	errNoTarget = errors.New("the app's own port cannot be reached")
)

// flow is one app flow being routed.
type flow struct {
	proto    policy.Proto
	src, dst netip.AddrPort
	// host is the name the app asked the sandbox's DNS for and got dst's
	// address, hostSide where it was resolved; "" for none.
	host     string
	hostSide policy.Route
	decision policy.Decision
	rec      FlowRecord
}

func (r *Router) newFlow(proto policy.Proto, src, dst netip.AddrPort) *flow {
	f := &flow{proto: proto, src: src, dst: dst}
	names := r.names.lookup(dst.Addr())
	f.host, f.hostSide = names.host, names.side
	appListens := false
	if r.asksAppListens(dst) {
		appListens = r.cfg.AppListens(proto, dst.Port())
	}
	f.decision = r.cfg.Policy.Decide(policy.Flow{Proto: proto, Dst: dst, Host: f.host, Names: names.names, AppListens: appListens})
	f.rec = FlowRecord{
		Start: time.Now(), Proto: proto.String(), Src: src.String(), Dst: dst.String(),
		Host: names.logName(), Route: f.decision.Route.String(), Rule: f.decision.Rule,
	}
	return f
}

// asksAppListens says whether deciding a flow to dst asks whether the app
// listens on its port, which may re-read /proc: only loopback flows do.
func (r *Router) asksAppListens(dst netip.AddrPort) bool {
	_, loop := policy.Loopback(dst.Addr())
	return loop && r.cfg.AppListens != nil
}

// dial opens the flow's other end where the decision says.
func (r *Router) dial(ctx context.Context, f *flow) (net.Conn, error) {
	network := "tcp"
	if f.proto == policy.UDP {
		network = "udp"
	}
	switch f.decision.Route {
	case policy.Block:
		r.stats.blocked.Add(1)
		return nil, errBlocked
	case policy.Sandbox:
		if r.cfg.DialSandbox == nil {
			return nil, errNoTarget
		}
		return r.cfg.DialSandbox(ctx, network, f.dst.String())
	case policy.Local:
		dst, err := r.localDestination(ctx, f)
		if err != nil {
			return nil, err
		}
		return r.cfg.DialLocal(ctx, network, dst.String())
	}
	if r.cfg.Remote == nil {
		r.warnOnceFor("noagent "+network+" "+f.dst.String(), "refusing a remote flow: no agent is configured",
			"proto", network, "dst", f.dst.String(), "rule", f.decision.Rule)
		return nil, errNoAgent
	}
	if f.proto == policy.UDP {
		return r.cfg.Remote.DialUDP(ctx, f.dst)
	}
	return r.cfg.Remote.DialTCP(ctx, f.dst)
}

// localDestination is where a local flow is dialed. A flow whose address
// came from a cluster DNS answer is dialed at the name's local resolution,
// as mirrord does; loopback is never re-resolved.
func (r *Router) localDestination(ctx context.Context, f *flow) (netip.AddrPort, error) {
	if lo, loop := policy.Loopback(f.dst.Addr()); loop {
		return netip.AddrPortFrom(lo, f.dst.Port()), nil
	}
	if f.host == "" || f.hostSide != policy.Remote {
		return f.dst, nil
	}
	for _, name := range r.localNameCandidates(f.host) {
		addrs, err := r.lookupLocal(ctx, name, f.dst.Addr().Is6())
		if err != nil || len(addrs) == 0 {
			continue
		}
		return netip.AddrPortFrom(addrs[0], f.dst.Port()), nil
	}
	return netip.AddrPort{}, fmt.Errorf("%s resolved in the cluster, the flow goes local, and %q has no local address: %w",
		f.dst, f.host, syscall.ECONNREFUSED)
}

// localNameCandidates is the cluster name first, then the name with a pod
// search domain removed ("messages-db.default.svc.cluster.local" →
// "messages-db"), which is the name the app asked for.
func (r *Router) localNameCandidates(name string) []string {
	out := []string{name}
	for _, d := range r.cfg.SearchDomains {
		d = strings.TrimSuffix(strings.ToLower(d), ".")
		if base, ok := strings.CutSuffix(name, "."+d); ok && base != "" {
			out = append(out, base)
		}
	}
	return out
}

// isTimeout tells a destination that did not answer (the app must see a
// timeout, so we stay silent) from one that refused (RST at once).
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.ETIMEDOUT)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
