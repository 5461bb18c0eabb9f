// Package preflight checks what a run needs of this host and of its
// cluster before anything is started, and says for each missing piece why
// it matters and how to get it. `trafficpolice doctor` prints the checks;
// `sandbox run` stops at the first failure, before it touches a cluster.
package preflight

import (
	"context"
	"fmt"
	"strings"
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

// Run runs the checks env asks for, in order: the host's first, then the
// cluster's (only when the host can run a sandbox at all and env names a
// cluster).
func Run(ctx context.Context, env Env) []Result {
	env = env.withDefaults()
	rs := []Result{checkPrivileges(env), checkTUN(env)}
	if env.Rootless {
		rs = append(rs, checkUserns(env))
	} else {
		rs = append(rs, checkNetns(env), checkNAT(env))
	}
	rs = append(rs, checkStateDir(env))
	if env.Image != "" && env.Rootless {
		rs = append(rs, Result{Check: "containerd", Status: Fail, Detail: "--image needs root: containers run through the system's containerd",
			Fix: "run with sudo (rootless containerd is not supported yet)"})
	} else if env.Image != "" {
		rs = append(rs, checkContainerd(ctx, env))
	}
	if env.Kube != nil {
		rs = append(rs, checkCluster(ctx, env)...)
		if env.AgentImage != "" {
			rs = append(rs, checkAgentImage(ctx, env))
		}
	}
	return rs
}
