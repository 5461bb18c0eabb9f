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
	h, err := startHelper(stdin, stdout, stderr, terminal)
	if err != nil {
		return nil, err
	}
	return h.handOver(p)
}

// helper is an init helper started and waiting for its payload on the spec
// pipe.
type helper struct {
	cmd         *exec.Cmd
	errR, specW *os.File
	handedOver  bool
}

// startHelper starts the init helper, which waits for its payload.
func startHelper(stdin io.Reader, stdout, stderr io.Writer, terminal *os.File) (*helper, error) {
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("init error pipe: %w", err)
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		errR.Close()
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
		errR.Close()
		specW.Close()
		return nil, fmt.Errorf("start sandbox init (%s): %w", initArg0, err)
	}
	return &helper{cmd: cmd, errR: errR, specW: specW}, nil
}

// handOver sends the helper its payload and returns once the app runs, or
// reaps the helper and returns a *StartError.
func (h *helper) handOver(p *payload) (*exec.Cmd, error) {
	h.handedOver = true
	defer h.errR.Close()
	body, err := json.Marshal(p)
	if err != nil {
		h.specW.Close()
		h.cmd.Process.Kill()
		h.cmd.Wait()
		return nil, fmt.Errorf("encode init spec: %w", err)
	}
	// A write error means the helper died early; what it said, if
	// anything, is on the error pipe.
	_, werr := h.specW.Write(body)
	h.specW.Close()

	msg, rerr := io.ReadAll(h.errR)
	if rerr == nil && len(msg) == 0 && werr == nil {
		return h.cmd, nil
	}
	werr = errors.Join(werr, rerr)
	waitErr := h.cmd.Wait()
	var se StartError
	if len(msg) > 0 && json.Unmarshal(msg, &se) == nil {
		return nil, &se
	}
	return nil, &StartError{Step: "init", Msg: fmt.Sprintf("init helper failed before reporting (%v; exit: %v)", werr, waitErr)}
}

// abandon kills and reaps a helper that was never handed its payload: it
// has done nothing yet but start.
func (h *helper) abandon() {
	if h.handedOver {
		return
	}
	h.handedOver = true
	h.cmd.Process.Kill()
	h.specW.Close()
	h.errR.Close()
	h.cmd.Wait()
}

// Prestarted is an init helper started before the app's spec is known: the
// helper's own start-up (this binary's, tens of milliseconds) then overlaps
// the sandbox's set-up instead of following it. Start it once the namespace
// it will enter exists (its mount namespace is copied when it starts);
// call Abandon when the app will not be started.
type Prestarted struct{ h *helper }

// Prestart starts an init helper for an app with these standard streams,
// which no terminal may be: a terminal is handed to the app's process
// group when the helper starts, and must stay with trafficpolice until the
// app runs (use Start for an app on a terminal). As with Start, the helper
// gets SIGKILL if the OS thread that called Prestart ends.
func Prestart(stdin io.Reader, stdout, stderr io.Writer) (*Prestarted, error) {
	h, err := startHelper(stdin, stdout, stderr, nil)
	if err != nil {
		return nil, err
	}
	return &Prestarted{h: h}, nil
}

// Start is launch.Start for the prestarted helper: the app gets the
// streams Prestart was given (spec's are not used), and spec may not name a
// terminal. On any error the helper is reaped.
func (ps *Prestarted) Start(spec Spec) (*exec.Cmd, error) {
	if spec.Terminal != nil {
		ps.Abandon()
		return nil, &StartError{Step: "spec", Msg: "a prestarted helper cannot hand the app a terminal: use launch.Start"}
	}
	if ps.h.handedOver {
		return nil, &StartError{Step: "spec", Msg: "the prestarted helper was already used or abandoned"}
	}
	p, err := spec.payload()
	if err != nil {
		ps.Abandon()
		return nil, &StartError{Step: "spec", Msg: err.Error()}
	}
	return ps.h.handOver(p)
}

// Abandon kills and reaps the helper unless Start handed it an app; it is
// safe to call more than once, and after Start.
func (ps *Prestarted) Abandon() {
	if ps != nil {
		ps.h.abandon()
	}
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
