package k8s

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// component is one long-running process of the cluster. Its PID is
// recorded in the run dir so that a later run can stop it if this test
// binary dies without its teardown.
type component struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startComponent starts argv with its output in logs/NAME.log.
func (c *Cluster) startComponent(name string, argv ...string) (*component, error) {
	return c.startComponentEnv(name, nil, argv...)
}

// startComponentEnv is startComponent with env added to the environment.
func (c *Cluster) startComponentEnv(name string, env []string, argv ...string) (*component, error) {
	logPath := filepath.Join(c.dir, "logs", name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s's log: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = c.dir
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+c.Kubeconfig), env...)
	// Its own process group: a ^C to the test reaches the test, which
	// then stops the cluster in order (pods before kubelet).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &component{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	if err := os.WriteFile(filepath.Join(c.dir, "pids", name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return p, fmt.Errorf("record %s's pid: %w", name, err)
	}
	c.components = append(c.components, p)
	return p, nil
}

// exited reports, as an error with the end of its log, that the component
// is no longer running.
func (p *component) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v); the end of %s:\n%s", p.name, p.cmd.ProcessState, p.log, tailFile(p.log, 15))
	default:
		return nil
	}
}

// stop ends the component: SIGTERM, then SIGKILL after grace.
func (p *component) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// killRecorded stops the processes a dead run recorded under dir/pids,
// checking that each PID still runs the binary of that component.
func killRecorded(dir string) {
	entries, _ := os.ReadDir(filepath.Join(dir, "pids"))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "pids", e.Name()))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || !strings.Contains(filepath.Base(exe), componentBinary(e.Name())) {
			continue
		}
		syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// componentBinary is the executable name a component runs.
func componentBinary(name string) string {
	switch name {
	case "apiserver":
		return "kube-apiserver"
	case "controller-manager":
		return "kube-controller-manager"
	case "scheduler":
		return "kube-scheduler"
	}
	return name
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return lastLines(string(b), n)
}

// waitFor polls ok every 200ms until it returns nil, a component exits,
// or timeout passes; the error names what was awaited.
func (c *Cluster) waitFor(what string, timeout time.Duration, ok func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = ok(); last == nil {
			return nil
		}
		for _, p := range c.components {
			if err := p.exited(); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %s: %w", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")
