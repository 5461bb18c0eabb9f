// Command trafficpolice runs an app as if it ran inside a Kubernetes pod and
// decides, flow by flow, what reaches the cluster and what stays local.
package main

import (
	"fmt"
	"os"

	"github.com/trafficpolice/trafficpolice/sandbox/launch"
)

// exitFailure is the exit status of trafficpolice's own failures, Docker's
// and Podman's convention: scripts can tell it from the command's own
// statuses (2 for make and shell builtins, 126/127 for a command that
// cannot be started).
const exitFailure = 125

func main() {
	// The sandbox's process launcher re-executes this binary to set up the
	// app's namespaces between fork and exec; it never returns then.
	launch.MaybeRunInit()
	if err := newRootCommand().Execute(); err != nil {
		var exitErr *exitError
		if asExit(err, &exitErr) {
			os.Exit(exitErr.code)
		}
		fmt.Fprintln(os.Stderr, "trafficpolice:", err)
		os.Exit(exitFailure)
	}
}
