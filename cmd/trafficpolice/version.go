package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCommand() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "version [-o json]",
		Short: "Print the version of trafficpolice",
		Example: "  trafficpolice version\n" +
			"  trafficpolice --version\n" +
			"  trafficpolice version -o json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]string{
					"version":  versionString(),
					"go":       runtime.Version(),
					"platform": runtime.GOOS + "/" + runtime.GOARCH,
				})
			}
			fmt.Fprintln(cmd.OutOrStdout(), "trafficpolice", versionString())
			return nil
		},
	}
	out.add(cmd.Flags())
	return cmd
}

// versionString is the build's version: -X main.version, else "dev" with
// the commit when the build recorded one.
func versionString() string {
	v := version
	if info, ok := debug.ReadBuildInfo(); ok && v == "dev" {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				v = "dev-" + s.Value
			}
		}
	}
	return v
}
