package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/sandbox"
)

func newSandboxGCCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove what killed runs left behind (namespaces, processes, state)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cleaned, err := sandbox.Collect()
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
}
