package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// Options are what the user says about the container (the flags of
// `sandbox run --image`).
type Options struct {
	// Address is containerd's socket; "" picks as Address("") does.
	Address string
	// Namespace is the containerd namespace; "" is DefaultNamespace.
	Namespace string
	// Mounts are bound into the container on top of the current folder.
	Mounts []Mount
	// Workdir is the command's folder inside; "" is the current folder
	// when it is bound, else the image's.
	Workdir string
	// Env is added to the image's environment (K=V).
	Env []string
}

// Spec is one container run inside a sandbox.
type Spec struct {
	Options
	// Image is the image reference; pulled when containerd lacks it.
	Image string
	// ID names the container and its snapshot; unique per run.
	ID string
	// Argv follows the image's entrypoint, replacing its command (as
	// `docker run IMAGE ARGV...`); empty keeps the image's command.
	Argv []string
	// Cwd is the host folder bound at the same path (the devcontainer
	// habit), unless a mount names it or it is "/"; "" binds none.
	Cwd string
	// NetnsPath is the sandbox's network namespace, /run/netns/NAME.
	NetnsPath string
	// ResolvConf and Hosts are bound over /etc/resolv.conf and /etc/hosts.
	ResolvConf, Hosts string
	// UID and GID run the command as that user; nil keeps the image's.
	UID, GID *uint32
	// CapAdd are capabilities added to containerd's default set (Docker's),
	// canonical CAP_ names.
	CapAdd []string
	// Stdin, Stdout and Stderr are the command's; with TTY set they are
	// ignored for the terminal.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// TTY is the terminal to give the container (put in raw mode while it
	// runs, its size followed); nil for plain pipes.
	TTY *os.File
	// StateDir is the run's state folder: the container is recorded there
	// (see Cleanup) and its stdio FIFOs live there.
	StateDir string
	// Signals are forwarded to the container's process.
	Signals <-chan os.Signal
	// PullProgress gets the pull progress bar; nil for none.
	PullProgress io.Writer
	// Started, if set, is told the process's host PID before it starts
	// running the command.
	Started func(pid int)
}

// StartError is a command that could not be started in the container (not
// found, not executable): the run ends with ExitCode as a shell's would.
type StartError struct {
	ExitCode int
	Err      error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Run runs the container and returns its exit status (128+N when signal N
// ended it). Everything it created in containerd is removed before it
// returns; a *StartError says the command could not be started.
func Run(ctx context.Context, s Spec) (code int, err error) {
	if err = s.check(); err != nil {
		return 0, err
	}
	s.Address = Address(s.Address)
	if s.Namespace == "" {
		s.Namespace = DefaultNamespace
	}
	client, err := Connect(ctx, s.Address)
	if err != nil {
		return 0, err
	}
	defer client.Close()
	ctx = namespaces.WithNamespace(ctx, s.Namespace)
	// The client logs its retries (say, each registry host it tries) on
	// stderr; our errors say what failed.
	ctx = log.WithLogger(ctx, quietLogger())

	image, err := ensureImage(ctx, client, s.Image, s.Namespace, s.PullProgress)
	if err != nil {
		return 0, err
	}
	if err := writeRecord(s.StateDir, record{Address: s.Address, Namespace: s.Namespace, ID: s.ID}); err != nil {
		return 0, err
	}
	defer func() {
		if rerr := remove(ctx, client, s.ID); rerr != nil {
			err = errors.Join(err, rerr)
			return
		}
		os.Remove(filepath.Join(s.StateDir, recordFile))
	}()

	var con console.Console
	if s.TTY != nil {
		if con, err = console.ConsoleFromFile(s.TTY); err != nil {
			return 0, fmt.Errorf("terminal: %w", err)
		}
	}
	specOpts, err := s.specOpts(image, con)
	if err != nil {
		return 0, err
	}
	c, err := client.NewContainer(ctx, s.ID,
		containerd.WithImage(image),
		containerd.WithSnapshotter(containerd.DefaultSnapshotter),
		containerd.WithNewSnapshot(s.ID, image),
		containerd.WithNewSpec(specOpts...),
		containerd.WithContainerLabels(map[string]string{"trafficpolice.run": s.ID}),
	)
	if err != nil {
		return 0, fmt.Errorf("create container %s from %s: %w", s.ID, s.Image, err)
	}
	return s.runTask(ctx, c, con)
}

func (s *Spec) check() error {
	switch {
	case s.Image == "":
		return errors.New("Spec.Image is empty: want an image reference")
	case s.ID == "":
		return errors.New("Spec.ID is empty: want a unique container id")
	case s.NetnsPath == "":
		return errors.New("Spec.NetnsPath is empty: want the sandbox's namespace, e.g. /run/netns/NAME")
	case s.StateDir == "":
		return errors.New("Spec.StateDir is empty: want the run's state folder")
	case s.UID != nil && s.GID == nil:
		return fmt.Errorf("Spec.UID is %d but Spec.GID is nil: set both", *s.UID)
	}
	for _, m := range s.Mounts {
		if _, err := os.Stat(m.Source); err != nil {
			return fmt.Errorf("--mount %s: source: %w", m, err)
		}
	}
	return nil
}

// specOpts assembles the OCI spec: the image's config, then each thing
// the sandbox adds, one option each.
func (s *Spec) specOpts(image containerd.Image, con console.Console) ([]oci.SpecOpts, error) {
	opts := []oci.SpecOpts{
		oci.WithImageConfigArgs(image, s.Argv),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetnsPath}),
	}
	if len(s.Argv) == 0 {
		opts[0] = oci.WithImageConfig(image)
	}
	var mounts []specs.Mount
	bind := func(src, dst string, ro bool) {
		mode := "rw"
		if ro {
			mode = "ro"
		}
		mounts = append(mounts, specs.Mount{Type: "bind", Source: src, Destination: dst, Options: []string{"rbind", mode}})
	}
	if s.ResolvConf != "" {
		bind(s.ResolvConf, "/etc/resolv.conf", true)
	}
	if s.Hosts != "" {
		bind(s.Hosts, "/etc/hosts", true)
	}
	cwdBound := false
	if s.Cwd != "" && s.Cwd != "/" {
		named := false
		for _, m := range s.Mounts {
			named = named || m.Source == s.Cwd || m.Destination == s.Cwd
		}
		if !named {
			bind(s.Cwd, s.Cwd, false)
			cwdBound = true
		}
	}
	for _, m := range s.Mounts {
		bind(m.Source, m.Destination, m.ReadOnly)
	}
	opts = append(opts, oci.WithMounts(mounts))
	switch {
	case s.Workdir != "":
		opts = append(opts, oci.WithProcessCwd(s.Workdir))
	case cwdBound:
		opts = append(opts, oci.WithProcessCwd(s.Cwd))
	}
	if s.UID != nil {
		opts = append(opts, oci.WithUIDGID(*s.UID, *s.GID))
	}
	if len(s.CapAdd) > 0 {
		opts = append(opts, oci.WithAddedCapabilities(s.CapAdd))
	}
	env := s.Env
	if con != nil {
		size, err := con.Size()
		if err != nil {
			return nil, fmt.Errorf("terminal size: %w", err)
		}
		term := os.Getenv("TERM")
		if term == "" {
			term = "xterm"
		}
		env = append([]string{"TERM=" + term}, env...)
		opts = append(opts, oci.WithTTY, oci.WithTTYSize(int(size.Width), int(size.Height)))
	}
	if len(env) > 0 {
		opts = append(opts, oci.WithEnv(env))
	}
	return opts, nil
}

// runTask creates the task with the container's stdio, starts it, passes
// signals and terminal size changes on, and waits for its end.
func (s *Spec) runTask(ctx context.Context, c containerd.Container, con console.Console) (int, error) {
	creator, taskReady, err := s.taskIO(ctx, con)
	if err != nil {
		return 0, err
	}
	task, err := c.NewTask(ctx, creator)
	if err != nil {
		return startFailure(err)
	}
	taskReady <- task
	// Not ctx: the exit status must arrive even after ctx is cancelled.
	exited, err := task.Wait(context.WithoutCancel(ctx))
	if err != nil {
		return 0, fmt.Errorf("wait for container %s: %w", s.ID, err)
	}
	if s.Started != nil {
		s.Started(int(task.Pid()))
	}
	winch, restore, err := rawTerminal(con)
	if err != nil {
		return 0, err
	}
	defer restore()
	if err := task.Start(ctx); err != nil {
		return startFailure(err)
	}
	return s.superviseTask(ctx, task, exited, con, winch)
}

// taskIO makes the task's stdio: the terminal, or the Spec's streams,
// through FIFOs in the state folder. The task must be sent on the returned
// channel once it exists: the end of Stdin is passed on to it.
func (s *Spec) taskIO(ctx context.Context, con console.Console) (cio.Creator, chan<- containerd.Task, error) {
	fifoDir := filepath.Join(s.StateDir, "fifo")
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("stdio folder: %w", err)
	}
	// The daemon keeps the process's stdin open until told: closing it is
	// how the command sees end of file.
	taskReady := make(chan containerd.Task, 1)
	var closeOnce sync.Once
	closeStdin := func() {
		closeOnce.Do(func() {
			go func() {
				if t, ok := <-taskReady; ok {
					taskReady <- t
					_ = t.CloseIO(ctx, containerd.WithStdinCloser)
				}
			}()
		})
	}
	var ioOpts []cio.Opt
	if con != nil {
		ioOpts = append(ioOpts, cio.WithStreams(con, con, nil), cio.WithTerminal)
	} else {
		var stdin io.Reader
		if s.Stdin != nil {
			stdin = &eofReader{r: s.Stdin, eof: closeStdin}
		}
		ioOpts = append(ioOpts, cio.WithStreams(stdin, s.Stdout, s.Stderr))
	}
	ioOpts = append(ioOpts, cio.WithFIFODir(fifoDir))
	return cio.NewCreator(ioOpts...), taskReady, nil
}

// rawTerminal puts the terminal in raw mode and returns the channel of its
// size changes, and restore to undo both. Without a terminal (con nil) it
// does nothing: the channel is nil, restore a no-op.
func rawTerminal(con console.Console) (winch chan os.Signal, restore func(), err error) {
	if con == nil {
		return nil, func() {}, nil
	}
	if err := con.SetRaw(); err != nil {
		return nil, nil, fmt.Errorf("terminal raw mode: %w", err)
	}
	winch = make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	return winch, func() {
		signal.Stop(winch)
		con.Reset()
	}, nil
}

// superviseTask runs until the started task exits: it forwards s.Signals
// and terminal size changes, stops the task (TERM, then KILL) when ctx
// ends, and returns the exit status once the task is deleted.
func (s *Spec) superviseTask(ctx context.Context, task containerd.Task, exited <-chan containerd.ExitStatus, con console.Console, winch <-chan os.Signal) (int, error) {
	var killed <-chan time.Time
	for {
		select {
		case sig := <-s.Signals:
			if ss, ok := sig.(syscall.Signal); ok {
				_ = task.Kill(ctx, ss)
			}
		case <-winch:
			if size, err := con.Size(); err == nil {
				_ = task.Resize(ctx, uint32(size.Width), uint32(size.Height))
			}
		case <-ctx.Done():
			// Asked to stop: TERM, then KILL if it does not listen.
			if killed == nil {
				_ = task.Kill(context.WithoutCancel(ctx), syscall.SIGTERM)
				killed = time.After(5 * time.Second)
			}
			ctx = context.WithoutCancel(ctx)
		case <-killed:
			_ = task.Kill(ctx, syscall.SIGKILL)
			killed = nil
		case st := <-exited:
			code, _, err := st.Result()
			if err != nil {
				return 0, fmt.Errorf("container %s: %w", s.ID, err)
			}
			drainOutput(task)
			if _, err := task.Delete(context.WithoutCancel(ctx)); err != nil {
				return int(code), fmt.Errorf("delete the task of container %s: %w", s.ID, err)
			}
			return int(code), nil
		}
	}
}

// outputDrain bounds how long an exited task's output may take to arrive
// (a process the container left behind may hold its stdout open).
const outputDrain = 2 * time.Second

// drainOutput waits until this process has copied all the exited task's
// output, bounded by outputDrain. Delete cancels the copy and closes the
// fifos: what it had not read yet of a short-lived container's last
// output would be lost (CI saw a container's stderr line missing).
func drainOutput(task containerd.Task) {
	io := task.IO()
	if io == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Wait() // returns at the latest when Delete closes the fifos
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(outputDrain):
	}
}

// runc words a command it cannot start like this; a shell would exit 127
// or 126 for it.
var (
	notFound  = regexp.MustCompile(`executable file not found|no such file or directory`)
	cannotRun = regexp.MustCompile(`permission denied|is a directory|exec format error`)
)

func startFailure(err error) (int, error) {
	msg := err.Error()
	if i := strings.LastIndex(msg, "exec: "); i >= 0 {
		msg = msg[i+len("exec: "):]
	}
	switch {
	case notFound.MatchString(err.Error()):
		return 127, &StartError{ExitCode: 127, Err: errors.New(msg)}
	case cannotRun.MatchString(err.Error()):
		return 126, &StartError{ExitCode: 126, Err: errors.New(msg)}
	}
	return 0, fmt.Errorf("start the container's command: %w", err)
}

// eofReader calls eof once its reader is done.
type eofReader struct {
	r   io.Reader
	eof func()
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.eof()
	}
	return n, err
}

// quietLogger discards the containerd client's log lines.
func quietLogger() *log.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}
