package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/sandbox"
)

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with configuration files (mirrord's format: JSON, YAML or TOML)",
		Example: "  trafficpolice config check -f .mirrord/mirrord.json\n" +
			"  trafficpolice config schema > trafficpolice.schema.json",
	}
	cmd.AddCommand(newConfigCheckCommand(), newConfigSchemaCommand())
	return cmd
}

func newConfigCheckCommand() *cobra.Command {
	var cf configFlags
	check := &cobra.Command{
		Use:   "check [-f FILE] [--strict]",
		Short: "Validate a configuration file and print the effective configuration",
		Long: "Validate a configuration file (JSON, YAML or TOML, by extension) and print the effective\n" +
			"configuration with every default filled in. Unknown keys, typos and bad filter entries are\n" +
			"errors that name the field. mirrord keys that trafficpolice does not honour but can run\n" +
			"without print a warning each on stderr (--strict makes them errors); `sandbox run` accepts\n" +
			"exactly what this accepts. Without -f, " + defaultConfigFile + " is read when it exists.",
		Example: "  trafficpolice config check -f config.json\n" +
			"  trafficpolice config check --strict -f .mirrord/mirrord.yaml",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cf.file == "" && !defaultConfigExists() {
				return fmt.Errorf("give the configuration file with -f FILE (there is no %s here)", defaultConfigFile)
			}
			cfg, err := cf.load(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			// The run's own check of the outgoing filter's entries.
			if _, err := sandbox.Policy(cfg, sandbox.ExtraRules{}, true); err != nil {
				return fmt.Errorf("%s: %w", cf.path(), err)
			}
			out, err := cfg.Effective()
			if err != nil {
				return err
			}
			cmd.OutOrStdout().Write(append(out, '\n'))
			return nil
		},
	}
	cf.add(check.Flags(), true)
	return check
}

func newConfigSchemaCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the configuration's JSON Schema, for editors",
		Long: "Print the JSON Schema (draft 2020-12) of the configuration file, written from the same key\n" +
			"table the parser uses: editors complete keys and mark typos and wrong types with it. Point\n" +
			"a file at it with a \"$schema\" key (trafficpolice accepts and ignores that key), or set it\n" +
			"in the editor's settings. The repository keeps a copy in config/schema.json.",
		Example: "  trafficpolice config schema > .mirrord/trafficpolice.schema.json\n" +
			"  echo '{\"$schema\": \"./trafficpolice.schema.json\", \"target\": \"pod/uwu-app\"}' > .mirrord/mirrord.json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := config.Schema()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(s)
			return err
		},
	}
}

// defaultConfigFile is read when no -f is given and it exists in the
// current folder, as mirrord's IDE extensions do.
const defaultConfigFile = ".mirrord/mirrord.json"

func defaultConfigExists() bool {
	st, err := os.Stat(defaultConfigFile)
	return err == nil && st.Mode().IsRegular()
}

// configFlags choose the configuration file and how strictly it is read.
type configFlags struct {
	file   string
	strict bool
}

// add registers -f (alias --config-file, mirrord's name) and, when strict
// is offered, --strict.
func (c *configFlags) add(fl *pflag.FlagSet, strict bool) {
	fl.StringVarP(&c.file, "file", "f", "", "configuration file, mirrord's format: JSON, YAML or TOML (also --config-file; default "+defaultConfigFile+" when it exists)")
	if strict {
		fl.BoolVar(&c.strict, "strict", false, "refuse mirrord keys that trafficpolice does not honour, instead of warning about each")
	}
	fl.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "config-file" {
			name = "file"
		}
		return pflag.NormalizedName(name)
	})
}

// path is the file to read: -f's, else the default file when it exists,
// else "" (mirrord's defaults).
func (c configFlags) path() string {
	if c.file == "" && defaultConfigExists() {
		return defaultConfigFile
	}
	return c.file
}

// load reads the configuration and writes a warning per ignored key to
// stderr, or refuses them with --strict.
func (c configFlags) load(stderr io.Writer) (*config.Config, error) {
	path := c.path()
	if path == "" {
		return config.Default(), nil
	}
	if c.file == "" {
		fmt.Fprintf(stderr, "trafficpolice: reading %s (no -f given)\n", path)
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if c.strict {
		if err := cfg.Strict(); err != nil {
			var ce *config.Error
			if errors.As(err, &ce) {
				ce.File = path
			}
			return nil, err
		}
	}
	for _, w := range cfg.Ignored {
		fmt.Fprintf(stderr, "trafficpolice: warning: %s: %s\n", path, w)
	}
	return cfg, nil
}
