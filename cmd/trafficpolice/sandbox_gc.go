package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/agent/connect"
	"github.com/trafficpolice/trafficpolice/sandbox"
)

func newSandboxGCCommand() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "gc [-o json]",
		Short: "Remove what killed runs left behind (namespaces, processes, state)",
		Long: "Remove what runs killed with SIGKILL left behind: their network namespaces, processes,\n" +
			"containers and state (root's under /run/trafficpolice, everyone's; a user's in their runtime\n" +
			"folder), and the agent Jobs and Secrets they had created in a cluster (a Job still Pending\n" +
			"included), through the kubeconfig and context they used. Runs also do this when they start.\n" +
			"-o json prints {\"removed\": [RUN-ID or \"job NS/NAME\"...]} (and \"error\" when one could not be removed).",
		Example: "  sudo trafficpolice sandbox gc\n" +
			"  sudo trafficpolice sandbox gc -o json | jq -r '.removed[]'",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			cleaned, err := sandbox.Collect()
			objs, kerr := connect.CollectStale(cmd.Context(), sandbox.RunStateDir())
			cleaned = append(cleaned, objs...)
			err = errors.Join(err, kerr)
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
				if strings.Contains(id, " ") {
					fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", id) // a cluster object
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "removed run %s\n", id)
				}
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
