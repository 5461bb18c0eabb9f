package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// stopGrace is how long a process may take to exit after SIGTERM
	// before it and its process group get SIGKILL.
	stopGrace = 3 * time.Second
	// runTimeout bounds a one-shot command started with Run.
	runTimeout = 2 * time.Minute
	// maxKeptOutput bounds the output a Process keeps for Output.
	maxKeptOutput = 8 << 20
)

// podShell enters the pod's view of the filesystem before the command
// runs: in a private mount namespace (set up by Go) it binds the pod's
// resolv.conf and hosts over /etc's, and in a private UTS namespace it
// sets the hostname to the pod's name. Then it execs the command, which
// keeps the shell's PID.
const podShell = `set -e
mount --bind "$1" /etc/resolv.conf
mount --bind "$2" /etc/hosts
printf '%s' "$3" > /proc/sys/kernel/hostname
shift 3
exec "$@"`

// Process is a program running in a pod, started by Pod.Start. Its
// stdout and stderr go, line by line, to the test log.
type Process struct {
	name string // "pod/program", for logs and errors
	cmd  *exec.Cmd
	out  *lineLog
	done chan struct{}
	err  error // the exit status, once done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start runs argv in the pod with the host's environment plus env
// ("KEY=VALUE", later ones win), its output in the test log. The process
// and its children are stopped in t's Cleanup (SIGTERM, then SIGKILL), and
// die with the test binary if it crashes (unless the program changes its
// user, which clears the parent-death signal).
func (p *Pod) Start(t TB, argv []string, env ...string) *Process {
	t.Helper()
	proc, err := p.start(t, argv, env)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := proc.stop(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return proc
}

func (p *Pod) start(t TB, argv []string, env []string) (*Process, error) {
	cmd, err := p.command(argv, env)
	if err != nil {
		return nil, err
	}
	name := p.name + "/" + filepath.Base(argv[0])
	proc := &Process{name: name, cmd: cmd, out: newLineLog(t, name), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = proc.out, proc.out
	// Output copying must not hang on a grandchild that kept the pipe.
	cmd.WaitDelay = stopGrace
	if err := p.network.Do(cmd.Start); err != nil {
		return nil, fmt.Errorf("start %q in pod %s: %w", argv, p.name, err)
	}
	p.c.track(proc)
	t.Logf("%s: started (pid %d): %q", name, cmd.Process.Pid, argv)
	go func() {
		proc.err = cmd.Wait()
		proc.out.flush()
		close(proc.done)
	}()
	return proc, nil
}

// Run runs argv in the pod to completion (at most 2 minutes) and returns
// its combined output; the error says how it failed (exit status, timeout).
// The command and its output also go to the test log.
func (p *Pod) Run(t TB, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd, err := p.command(argv, nil)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = stopGrace
	if err := p.network.Do(cmd.Start); err != nil {
		return "", fmt.Errorf("start %q in pod %s: %w", argv, p.name, err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		// Kill the whole group: the command may have started children.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waitErr
		err = fmt.Errorf("timed out after %s", runTimeout)
	}
	t.Logf("%s: ran %q: %v\n%s", p.name, argv, exitText(err), out.String())
	if err != nil {
		return out.String(), fmt.Errorf("run %q in pod %s: %w", argv, p.name, err)
	}
	return out.String(), nil
}

// command builds the exec.Cmd that runs argv through podShell; it is
// started on a thread inside the pod's network namespace.
func (p *Pod) command(argv []string, env []string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("pod %s: empty command: want a program and its arguments", p.name)
	}
	prog, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("pod %s: program %q: %w", p.name, argv[0], err)
	}
	args := append([]string{"-c", podShell, "tpc-pod", p.resolv, p.hosts, p.name, prog}, argv[1:]...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Go makes the new mount namespace private before exec.
		Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		// Its own group, so stopping it also stops what it started.
		Setpgid: true,
		// Dies with the test binary (the thread that started it never exits).
		Pdeathsig: syscall.SIGKILL,
	}
	return cmd, nil
}

// Pid is the process's id (also its process group's).
func (pr *Process) Pid() int { return pr.cmd.Process.Pid }

// Done is closed when the process has exited.
func (pr *Process) Done() <-chan struct{} { return pr.done }

// Err is the process's exit status once Done is closed (nil for exit 0).
func (pr *Process) Err() error {
	select {
	case <-pr.done:
		return pr.err
	default:
		return nil
	}
}

// Output is everything the process printed so far (up to 8 MiB).
func (pr *Process) Output() string { return pr.out.String() }

// WaitOutput waits until the process has printed substr, failing the test
// if it exits first or timeout passes.
func (pr *Process) WaitOutput(t TB, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(pr.Output(), substr) {
			return
		}
		select {
		case <-pr.done:
			if strings.Contains(pr.Output(), substr) {
				return
			}
			t.Fatalf("%s exited (%v) without printing %q", pr.name, exitText(pr.err), substr)
		case <-deadline.C:
			t.Fatalf("%s did not print %q within %s", pr.name, substr, timeout)
		case <-tick.C:
		}
	}
}

// Signal sends sig to the process (not its children).
func (pr *Process) Signal(sig syscall.Signal) error {
	select {
	case <-pr.done:
		return fmt.Errorf("signal %s: %s already exited", sig, pr.name)
	default:
	}
	if err := pr.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s to %s: %w", sig, pr.name, err)
	}
	return nil
}

// Stop ends the process and its children (SIGTERM, SIGKILL after 3 s) and
// waits for it. Stopping a stopped process does nothing. It reports
// only failures to stop, not the exit status (see Err).
func (pr *Process) Stop() error { return pr.stop() }

func (pr *Process) stop() error {
	pr.stopOnce.Do(func() {
		pgid := pr.cmd.Process.Pid
		select {
		case <-pr.done:
			// Children may outlive it in its group.
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			return
		default:
		}
		if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			pr.stopErr = fmt.Errorf("stop %s: SIGTERM: %w", pr.name, err)
		}
		select {
		case <-pr.done:
		case <-time.After(stopGrace):
			pr.out.logf("%s: still running %s after SIGTERM: SIGKILL", pr.name, stopGrace)
			if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				pr.stopErr = fmt.Errorf("stop %s: SIGKILL: %w", pr.name, err)
				return
			}
			<-pr.done
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		pr.out.logf("%s: stopped: %s", pr.name, exitText(pr.err))
	})
	return pr.stopErr
}

func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// lineLog copies a process's output to the test log, one line per entry,
// and keeps it for Output.
type lineLog struct {
	t    TB
	name string

	mu      sync.Mutex
	partial []byte
	kept    bytes.Buffer
	dropped bool
}

func newLineLog(t TB, name string) *lineLog {
	return &lineLog{t: t, name: name}
}

func (l *lineLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kept.Len()+len(b) <= maxKeptOutput {
		l.kept.Write(b)
	} else if !l.dropped {
		l.dropped = true
		l.t.Logf("%s: more than %d bytes of output: Output() keeps only the start", l.name, maxKeptOutput)
	}
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.t.Logf("%s: %s", l.name, l.partial[:i])
		l.partial = l.partial[i+1:]
	}
	return len(b), nil
}

// flush logs a last line that had no newline.
func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.t.Logf("%s: %s", l.name, l.partial)
		l.partial = nil
	}
}

func (l *lineLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf(format, args...)
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.kept.String()
}
