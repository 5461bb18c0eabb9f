// Command trafficpolice runs an app as if it ran inside a Kubernetes pod and
// decides, flow by flow, what reaches the cluster and what stays local.
package main

import (
	"fmt"
	"os"

	"github.com/trafficpolice/trafficpolice/sandbox/launch"
)

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
		os.Exit(2)
	}
}
