// Package preflight checks what a run needs of this host and of its
// cluster before anything is started, and says for each missing piece why
// it matters and how to get it. `trafficpolice doctor` prints the checks;
// `sandbox run` stops at the first failure, before it touches a cluster.
package preflight

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// Status is a check's outcome.
type Status string

// The outcomes: a warning does not stop a run.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Result is one check's outcome.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do about a warning or a failure.
	Fix string `json:"fix,omitempty"`
}

func (r Result) String() string {
	s := fmt.Sprintf("%-4s %-12s %s", r.Status, r.Check, r.Detail)
	if r.Fix != "" {
		s += "\n     " + strings.Repeat(" ", 12) + " fix: " + r.Fix
	}
	return s
}

// Failed reports whether any result is a failure.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// FirstFailure is the first failed result as an error, nil when none
// failed.
func FirstFailure(rs []Result) error {
	for _, r := range rs {
		if r.Status == Fail {
			return &Error{Result: r}
		}
	}
	return nil
}

// Error is a failed check, as sandbox run reports it.
type Error struct{ Result Result }

func (e *Error) Error() string {
	msg := fmt.Sprintf("preflight %s: %s", e.Result.Check, e.Result.Detail)
	if e.Result.Fix != "" {
		msg += "; " + e.Result.Fix
	}
	return msg
}

// Run runs the checks env asks for, the host's then the cluster's (when
// env names one), and returns their results in that fixed order. The checks
// are independent of each other, so they run at the same time: a run waits
// for the slowest (a cluster's round trips, an iptables exec), not for
// their sum.
func Run(ctx context.Context, env Env) []Result {
	env = env.withDefaults()
	checks := []func() []Result{one(checkPrivileges, env), one(checkTUN, env)}
	if env.Rootless {
		checks = append(checks, one(checkUserns, env))
	} else {
		checks = append(checks, one(checkNetns, env), one(checkNAT, env))
		if env.KernelPath {
			checks = append(checks, one(checkKernelPath, env), one(checkKernelSockets, env))
		}
	}
	checks = append(checks, one(checkStateDir, env))
	if env.Image != "" && env.Rootless {
		checks = append(checks, func() []Result {
			return []Result{{Check: "containerd", Status: Fail, Detail: "--image needs root: containers run through the system's containerd",
				Fix: "run with sudo (rootless containerd is not supported yet)"}}
		})
	} else if env.Image != "" {
		checks = append(checks, func() []Result { return []Result{checkContainerd(ctx, env)} })
	}
	if env.Kube != nil {
		checks = append(checks, func() []Result { return checkCluster(ctx, env) })
		if env.AgentImage != "" {
			checks = append(checks, func() []Result { return []Result{checkAgentImage(ctx, env)} })
		}
	}
	results := make([][]Result, len(checks))
	var wg sync.WaitGroup
	for i, check := range checks {
		wg.Go(func() { results[i] = check() })
	}
	wg.Wait()
	var rs []Result
	for _, r := range results {
		rs = append(rs, r...)
	}
	return rs
}

// one makes a check of env that has one result a check for Run.
func one(check func(Env) Result, env Env) func() []Result {
	return func() []Result { return []Result{check(env)} }
}
