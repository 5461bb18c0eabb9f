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

// versionString is the build's version, with the commit after "dev" when
// the build recorded one.
func versionString() string {
	v := version
	if info, ok := debug.ReadBuildInfo(); ok && v == "dev" {
		if rev := buildSetting(info, "vcs.revision"); rev != "" {
			v = "dev-" + rev
		}
	}
	return v
}
