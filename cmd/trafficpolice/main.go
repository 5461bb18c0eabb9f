// Command trafficpolice runs an app as if it ran inside a Kubernetes pod and
// decides, flow by flow, what reaches the cluster and what stays local.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		var exitErr *exitError
		if asExit(err, &exitErr) {
			os.Exit(exitErr.code)
		}
		fmt.Fprintln(os.Stderr, "trafficpolice:", err)
		os.Exit(2)
	}
}
