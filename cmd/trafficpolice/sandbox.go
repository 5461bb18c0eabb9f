package main

import "github.com/spf13/cobra"

func newSandboxCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Run apps in a policed network sandbox",
		Example: "  sudo trafficpolice sandbox run -f config.json ./uwu-app\n" +
			"  sudo trafficpolice sandbox gc",
	}
	cmd.AddCommand(newSandboxRunCommand(), newSandboxGCCommand())
	return cmd
}
