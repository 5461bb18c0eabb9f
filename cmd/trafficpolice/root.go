package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries an exit status that is not a failure of trafficpolice
// itself, such as the sandboxed app's own exit status.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func asExit(err error, target **exitError) bool { return errors.As(err, target) }

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "trafficpolice",
		Short:         "Run an app locally as if it ran inside a Kubernetes pod, flow by flow",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand(), newConfigCommand(), newRouteCommand(), newSandboxCommand(), newAgentCommand(), newImagesCommand(), newDoctorCommand())
	return root
}
