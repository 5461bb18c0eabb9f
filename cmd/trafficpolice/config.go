package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/sandbox"
)

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with configuration files (mirrord's format: JSON, YAML or TOML)",
	}
	var file string
	check := &cobra.Command{
		Use:   "check -f FILE",
		Short: "Validate a configuration file and print the effective configuration",
		Long: "Validate a configuration file (JSON, YAML or TOML, by extension) and print the effective\n" +
			"configuration with every default filled in. Unknown keys, typos and bad filter entries are\n" +
			"errors that name the field.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(file)
			if err != nil {
				return err
			}
			if _, err := sandbox.Policy(cfg, sandbox.ExtraRules{}, true); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			out, err := cfg.Effective()
			if err != nil {
				return err
			}
			cmd.OutOrStdout().Write(append(out, '\n'))
			return nil
		},
	}
	check.Flags().StringVarP(&file, "file", "f", "", "configuration file (required)")
	check.MarkFlagRequired("file")
	cmd.AddCommand(check)
	return cmd
}

// loadConfig reads the file, or gives the defaults when path is "".
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}
