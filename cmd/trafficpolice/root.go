package main

import (
	"errors"
	"fmt"
	"runtime/debug"

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
	root.AddCommand(newVersionCommand(), newConfigCommand(), newRouteCommand(), newSandboxCommand(), newAgentCommand(), newImagesCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of trafficpolice",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version
			if info, ok := debug.ReadBuildInfo(); ok && v == "dev" {
				for _, s := range info.Settings {
					if s.Key == "vcs.revision" {
						v = "dev-" + s.Value
					}
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "trafficpolice", v)
			return nil
		},
	}
}
