package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/sandbox/container"
	"github.com/trafficpolice/trafficpolice/sandbox/launch"
)

// runContainer is runApp for `sandbox run --image`: the app runs in a
// container of o.Image that shares the sandbox's network namespace. The
// container is named after the namespace and recorded in the run's state
// folder, so teardown and Collect can remove it.
func runContainer(ctx context.Context, ns space, files resolverFiles, o Options, uid, gid *uint32, sigs <-chan os.Signal) (int, error) {
	capAdd, err := launch.ParseCapabilities(o.CapAdd)
	if err != nil {
		return 0, fmt.Errorf("Options.CapAdd: %w", err)
	}
	s := container.Spec{
		Options:    o.Container,
		Image:      o.Image,
		ID:         ns.Name(),
		Argv:       o.Argv,
		Cwd:        o.Dir,
		NetnsPath:  ns.Path(),
		ResolvConf: files.resolvConf,
		Hosts:      files.hosts,
		UID:        uid,
		GID:        gid,
		CapAdd:     capAdd,
		Stdin:      o.Stdin,
		Stdout:     o.Stdout,
		Stderr:     o.Stderr,
		TTY:        containerTerminal(o),
		StateDir:   filepath.Dir(files.resolvConf),
		Signals:    sigs,
	}
	if o.Progress != nil && !o.Progress.quit {
		s.PullProgress = stderrOf(o)
	}
	s.Started = func(pid int) {
		o.Progress.Step(fmt.Sprintf("starting %s in %s", strings.Join(o.Argv, " "), o.Image))(nil)
		if o.Started != nil {
			o.Started(ns.Name(), pid)
		}
	}
	code, err := container.Run(ctx, s)
	var startErr *container.StartError
	if errors.As(err, &startErr) {
		// As a shell would: 127 not found, 126 not executable.
		fmt.Fprintf(stderrOf(o), "trafficpolice: %v\n", startErr)
		return startErr.ExitCode, nil
	}
	return code, err
}

// containerTerminal is the terminal to give the container: stdin when it is
// our terminal in the foreground and stdout goes to a terminal too (a piped
// stdout wants plain bytes, not a TTY's).
func containerTerminal(o Options) *os.File {
	in := terminalOf(o.Stdin)
	if in == nil {
		return nil
	}
	out, ok := o.Stdout.(*os.File)
	if !ok {
		return nil
	}
	if _, err := unix.IoctlGetTermios(int(out.Fd()), unix.TCGETS); err != nil {
		return nil
	}
	return in
}
