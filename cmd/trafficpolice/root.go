package main

import (
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is this build's version: set with -ldflags "-X
// main.version=V" (make build, make release), else the module version
// that `go install github.com/trafficpolice/trafficpolice/cmd/trafficpolice@V`
// records (see init), else "dev".
var version = "dev"

func init() {
	if info, ok := debug.ReadBuildInfo(); ok {
		version = effectiveVersion(version, info)
	}
}

// effectiveVersion is the -X value when there is one, else the main
// module's version when the binary was built from a module download
// (go install …@V: no VCS stamp). A build in a checkout without -X stays
// "dev": its module version is a guess from git tags (+dirty and all),
// and the agent image tag follows this version.
func effectiveVersion(ldflag string, info *debug.BuildInfo) string {
	if ldflag != "" && ldflag != "dev" {
		return ldflag
	}
	v := info.Main.Version
	if v == "" || v == "(devel)" || buildSetting(info, "vcs.revision") != "" {
		return "dev"
	}
	return v
}

func buildSetting(info *debug.BuildInfo, key string) string {
	for _, s := range info.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}

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
				if rev := buildSetting(info, "vcs.revision"); rev != "" {
					v = "dev-" + rev
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "trafficpolice", v)
			return nil
		},
	}
}
