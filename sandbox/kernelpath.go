package sandbox

import (
	"github.com/trafficpolice/trafficpolice/kernelpath"
)

// startKernelPath hands the flows the rules send local by address or port
// to the kernel, for a root run; nil when the run has none (rootless, asked
// not to, a flow log to write, or set-up failed: the router then takes
// every flow, as before).
func startKernelPath(rec *record, ns space, o Options) *kernelpath.Path {
	named, ok := ns.(namedSpace)
	if !ok || o.NoKernelPath {
		return nil
	}
	if o.FlowLog != "" {
		// The flow log is written by the router, flow by flow.
		o.Logger.Info("kernel path off: the flow log needs every flow through the router")
		return nil
	}
	// Recorded first: a run killed during set-up leaves host rules that a
	// later run must find.
	rec.KernelPath = true
	if err := writeRecord(rec); err != nil {
		o.Logger.Warn("kernel path off", "err", err)
		return nil
	}
	kp, err := kernelpath.Setup(kernelpath.Config{Namespace: named.Namespace, ID: rec.ID, Steps: o.Policy.Steps()})
	if err != nil {
		o.Logger.Warn("kernel path off: every flow goes through the router", "err", err)
		return nil
	}
	o.Logger.Info("kernel path on: flows the rules send local by address or port go through the kernel, and are not logged here")
	return kp
}
