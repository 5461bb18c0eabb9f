package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// version is this build's version: set with -ldflags "-X
// main.version=V" (make build, make release), else the module version
// that `go install github.com/trafficpolice/trafficpolice/cmd/trafficpolice@V`
// records (see init in version.go), else "dev".
var version = "dev"

// exitError carries an exit status that is not a failure of trafficpolice
// itself, such as the sandboxed app's own exit status.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func asExit(err error, target **exitError) bool { return errors.As(err, target) }

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "trafficpolice",
		Short: "Run an app locally as if it ran inside a Kubernetes pod, flow by flow",
		Long: "Run an app locally as if it ran inside a Kubernetes pod, and decide, connection by\n" +
			"connection, what goes to the cluster and what stays local. It reads mirrord's configuration.\n" +
			"Its own failures exit 125; `sandbox run` exits with the app's status.",
		Example: "  sudo trafficpolice sandbox run -t deployment/uwu-app -n shop ./uwu-app --listen :9999\n" +
			"  trafficpolice route explain -f .mirrord/mirrord.json app-db:5432\n" +
			"  trafficpolice config check",
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("trafficpolice {{.Version}}\n")
	root.AddCommand(newVersionCommand(), newConfigCommand(), newRouteCommand(), newSandboxCommand(), newAgentCommand(), newImagesCommand(), newDoctorCommand(), newLsCommand())
	addCompletionExamples(root)
	return root
}

// addCompletionExamples adds cobra's completion command now, rather than
// when it runs, to give it and its shells examples as every command has.
func addCompletionExamples(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		c.Example = "  source <(trafficpolice completion bash)\n" +
			"  trafficpolice completion zsh > \"${fpath[1]}/_trafficpolice\""
		for _, sh := range c.Commands() {
			sh.Example = "  trafficpolice completion " + sh.Name() + " > trafficpolice." + sh.Name()
		}
	}
}
