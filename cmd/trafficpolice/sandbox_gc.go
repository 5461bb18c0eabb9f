package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/sandbox"
)

func newSandboxGCCommand() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "gc [-o json]",
		Short: "Remove what killed runs left behind (namespaces, processes, state)",
		Long: "Remove what runs killed with SIGKILL left behind: their network namespaces, processes,\n" +
			"containers and state under /run/trafficpolice. Runs also do this when they start. Needs root.\n" +
			"-o json prints {\"removed\": [RUN-ID...]} (and \"error\" when one could not be removed).",
		Example: "  sudo trafficpolice sandbox gc\n" +
			"  sudo trafficpolice sandbox gc -o json | jq -r '.removed[]'",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			cleaned, err := sandbox.Collect()
			if asJSON {
				report := struct {
					Removed []string `json:"removed"`
					Error   string   `json:"error,omitempty"`
				}{Removed: append([]string{}, cleaned...)}
				if err != nil {
					report.Error = err.Error()
				}
				if werr := writeJSON(cmd.OutOrStdout(), report); werr != nil {
					return werr
				}
				return err
			}
			for _, id := range cleaned {
				fmt.Fprintf(cmd.OutOrStdout(), "removed run %s\n", id)
			}
			if err != nil {
				return err
			}
			if len(cleaned) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to remove")
			}
			return nil
		},
	}
	out.add(cmd.Flags())
	return cmd
}
