package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// initArg0 is the argv[0] that turns this binary into the init helper.
const initArg0 = "trafficpolice-sandbox-init"

// The init helper's inherited descriptors (exec.Cmd.ExtraFiles start at 3).
const (
	errFD  = 3 // init → Start: a JSON StartError, or EOF when exec succeeded
	specFD = 4 // Start → init: the JSON payload
)

// Start starts the app described by spec and returns once it runs: the
// Cmd's process is the app itself (the init helper execs it in place), so
// Wait gives its exit status and signals go straight to it. If anything
// fails before the app runs, Start reaps the helper and returns a
// *StartError. The app gets SIGKILL if the OS thread that called Start
// ends, so call it from an ordinary goroutine (not one that locks its
// thread and exits). The binary's main, and TestMain in tests, must call
// MaybeRunInit first.
func Start(spec Spec) (*exec.Cmd, error) {
	p, err := spec.payload()
	if err != nil {
		return nil, &StartError{Step: "spec", Msg: err.Error()}
	}
	return startPayload(p, spec.Stdin, spec.Stdout, spec.Stderr, spec.Terminal)
}

// startPayload is Start for a spec already turned into the init helper's
// payload (the rootless holder receives it that way).
func startPayload(p *payload, stdin io.Reader, stdout, stderr io.Writer, terminal *os.File) (*exec.Cmd, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode init spec: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("init error pipe: %w", err)
	}
	defer errR.Close()
	specR, specW, err := os.Pipe()
	if err != nil {
		errW.Close()
		return nil, fmt.Errorf("init spec pipe: %w", err)
	}

	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{initArg0},
		Stdin:      stdin,
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: []*os.File{errW, specR},
		SysProcAttr: &syscall.SysProcAttr{
			// A private mount namespace for the app's resolv.conf and hosts.
			Cloneflags: syscall.CLONE_NEWNS,
			Pdeathsig:  syscall.SIGKILL,
			// Its own process group: signals sent to trafficpolice's group
			// (a terminal's Ctrl-C, a CI runner's kill) reach the app once,
			// through trafficpolice's forwarding, not twice.
			Setpgid: true,
		},
	}
	if terminal != nil {
		cmd.SysProcAttr.Foreground = true
		cmd.SysProcAttr.Ctty = int(terminal.Fd())
	}
	err = cmd.Start()
	errW.Close()
	specR.Close()
	if err != nil {
		specW.Close()
		return nil, fmt.Errorf("start sandbox init (%s): %w", initArg0, err)
	}
	// A write error means the helper died early; what it said, if
	// anything, is on the error pipe.
	_, werr := specW.Write(body)
	specW.Close()

	msg, rerr := io.ReadAll(errR)
	if rerr == nil && len(msg) == 0 && werr == nil {
		return cmd, nil
	}
	werr = errors.Join(werr, rerr)
	waitErr := cmd.Wait()
	var se StartError
	if len(msg) > 0 && json.Unmarshal(msg, &se) == nil {
		return nil, &se
	}
	return nil, &StartError{Step: "init", Msg: fmt.Sprintf("init helper failed before reporting (%v; exit: %v)", werr, waitErr)}
}

// ReclaimTerminal makes this process's group the terminal's foreground
// group again, after an app started with Spec.Terminal has exited.
func ReclaimTerminal(tty *os.File) error {
	// A background group that calls tcsetpgrp gets SIGTTOU: ignore it for
	// the call, as shells do.
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	return unix.IoctlSetPointerInt(int(tty.Fd()), unix.TIOCSPGRP, unix.Getpgrp())
}
