package router

import (
	"net/netip"
	"time"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// KernelFlow is a flow the router decided but did not carry: the kernel
// path's (a root run hands local flows to the kernel), for the flow log.
type KernelFlow struct {
	Proto             policy.Proto
	Src, Dst          netip.AddrPort
	Start, End        time.Time
	BytesOut, BytesIn int64
}

// LogKernelFlow writes f's record to the flow log, with the rule that sends
// it local as the router decides it now (the names its address stands for
// may have changed since it started; the record says so).
func (r *Router) LogKernelFlow(f KernelFlow) {
	if r.flows == nil {
		return
	}
	names := r.names.lookup(f.Dst.Addr())
	d := r.cfg.Policy.Decide(policy.Flow{Proto: f.Proto, Dst: f.Dst, Host: names.host, Names: names.names})
	rule := d.Rule
	if d.Route != policy.Local {
		rule = "decided local when it started; now " + d.String()
	}
	r.flows.write(&FlowRecord{
		Start: f.Start, End: f.End, Proto: f.Proto.String(), Src: f.Src.String(), Dst: f.Dst.String(),
		Host: names.logName(), Route: policy.Local.String(), Rule: rule, Via: "kernel",
		BytesOut: f.BytesOut, BytesIn: f.BytesIn,
	})
}
