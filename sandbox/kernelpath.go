package sandbox

import (
	"sync/atomic"

	"github.com/trafficpolice/trafficpolice/kernelpath"
	"github.com/trafficpolice/trafficpolice/router"
)

// kernelPath is a run's kernel path and, with a flow log, the watch that
// hands its flows to the router's log.
type kernelPath struct {
	*kernelpath.Path
	// stopWatch ends the watch of the kernel path's flows (a flow log);
	// nil without one.
	stopWatch func() error
	// log is the router, once started: flows that end before (none: the
	// app has not started) would be dropped.
	log atomic.Pointer[router.Router]
}

// startKernelPath hands the flows the rules send local by address or port
// to the kernel, for a root run; nil when the run has none (rootless,
// asked not to, or set-up failed: the router then takes every flow, as
// before).
func startKernelPath(rec *record, ns space, o Options) *kernelPath {
	named, ok := ns.(namedSpace)
	if !ok || !rec.KernelPath {
		return nil // rootless, or --no-kernel-path (newRecord)
	}
	cfg := kernelpath.Config{Namespace: named.Namespace, ID: rec.ID, Steps: o.Policy.Steps(), Track: o.FlowLog != ""}
	p, err := kernelpath.Setup(cfg)
	if err != nil {
		o.Logger.Warn("kernel path off: every flow goes through the router", "err", err)
		return nil
	}
	kp := &kernelPath{Path: p}
	if cfg.Track {
		kp.stopWatch, err = p.WatchFlows(kp.logFlow)
		if err != nil {
			// The flow log must have every flow: the router's, then.
			o.Logger.Warn("kernel path off: its flows could not be logged", "err", err)
			if cerr := p.Close(); cerr != nil {
				o.Logger.Error("remove the kernel path", "err", cerr)
			}
			return nil
		}
	}
	o.Logger.Info("kernel path on: flows the rules send local by address or port go through the kernel")
	return kp
}

func (kp *kernelPath) logFlow(f kernelpath.Flow) {
	rt := kp.log.Load()
	if rt == nil {
		return
	}
	rt.LogKernelFlow(router.KernelFlow{Proto: f.Proto, Src: f.Src, Dst: f.Dst, Start: f.Start, End: f.End,
		BytesOut: int64(f.BytesOut), BytesIn: int64(f.BytesIn)})
}

// Close ends the watch, if any (once: a second call changes nothing), then
// removes the kernel path.
func (kp *kernelPath) Close() error {
	if kp.stopWatch != nil {
		// Its error is the flow log's, which the run reports (startServices).
		_ = kp.stopWatch()
	}
	return kp.Path.Close()
}
