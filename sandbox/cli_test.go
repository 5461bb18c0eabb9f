package sandbox

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// The tests here run the built trafficpolice command, as a user does.

// runCLI runs the command with args and returns its exit status and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(cli(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if cmd.ProcessState == nil {
		t.Fatalf("trafficpolice %v: %v", args, err)
	}
	t.Logf("trafficpolice %v: exit %d\nstdout: %s\nstderr: %s", args, cmd.ProcessState.ExitCode(), trim(out.String()), trim(errOut.String()))
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

func TestCLIExitsAsAShellWouldWhenTheAppCannotStart(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	for _, tc := range cannotStart(t) {
		code, stdout, stderr := runCLI(t, "sandbox", "run", "-q", "--", tc.argv0)
		if want := "trafficpolice: " + tc.msg + "\n"; code != tc.code || stdout != "" || stderr != want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d and only %q", tc.argv0, code, stdout, stderr, tc.code, want)
		}
	}
}

// spinnerRunes are what the progress animation draws on a terminal.
const spinnerRunes = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

func TestCLIProgressIsPlainWithoutATerminalAndSilencedByQuiet(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	// The output goes to pipes here, not to a terminal.
	code, stdout, stderr := runCLI(t, "sandbox", "run", "--", "sh", "-c", "echo out")
	if code != 0 || stdout != "out\n" {
		t.Fatalf("exit %d, stdout %q; want 0 and the app's line", code, stdout)
	}
	for _, step := range []string{"✓ namespace ready\n", "✓ router up\n", "✓ starting sh -c echo out\n"} {
		contains(t, stderr, step)
	}
	if strings.ContainsAny(stderr, "\r\x1b"+spinnerRunes) {
		t.Errorf("progress without a terminal has carriage returns, escapes or spinner frames: %q", stderr)
	}
	// Every line is a step done or a note, nothing half-drawn.
	for _, line := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		if !strings.HasPrefix(line, "✓ ") && !strings.HasPrefix(line, "  ") {
			t.Errorf("progress line %q is neither a step (✓) nor a note", line)
		}
	}

	code, stdout, stderr = runCLI(t, "sandbox", "run", "-q", "--", "sh", "-c", "echo out")
	if code != 0 || stdout != "out\n" || stderr != "" {
		t.Errorf("-q: exit %d, stdout %q, stderr %q; want 0, the app's line and no progress", code, stdout, stderr)
	}
}

// killedRun is what a run killed with SIGKILL left: its id and the
// processes it had in its namespace.
type killedRun struct {
	id   string
	pids []int
}

// killRun starts `trafficpolice sandbox run -q ARGS -- sleep 300`, waits
// until its record is written and running(id) holds, and kills the CLI
// with SIGKILL, so nothing of the run is cleaned up. It checks that the
// namespace and the record are left behind.
func killRun(t *testing.T, before hostState, running func(id string) bool, args ...string) killedRun {
	t.Helper()
	argv := append(append([]string{"sandbox", "run", "-q"}, args...), "--", "sleep", "300")
	cmd := newCmd(cli(t), argv...)
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })

	// The run's record, written before anything else, names the CLI's pid.
	var k killedRun
	waitUntil(t, 30*time.Second, "the run's record", func() bool {
		entries, _ := os.ReadDir(StateDir)
		for _, e := range entries {
			if r, err := readRecord(filepath.Join(StateDir, e.Name())); err == nil && r.PID == cmd.Process.Pid {
				k.id = r.ID
			}
		}
		return k.id != ""
	})
	before.add(NamespacePrefix + k.id)
	waitUntil(t, 30*time.Second, "the app running", func() bool { return running(k.id) })
	k.pids, _ = processesIn(NamespacePrefix + k.id)
	cmd.Process.Kill()
	<-exited
	if _, err := netns.Open(NamespacePrefix + k.id); err != nil {
		t.Fatalf("the killed run's namespace should be left until collected: %v", err)
	}
	if _, err := os.Stat(filepath.Join(StateDir, k.id)); err != nil {
		t.Fatalf("the killed run's record should be left until collected: %v", err)
	}
	return k
}

// appRunning holds once a process runs in the run's namespace.
func appRunning(id string) bool {
	pids, _ := processesIn(NamespacePrefix + id)
	return len(pids) > 0
}

// wantCollected checks that nothing of the killed run is left: namespace,
// record, processes.
func wantCollected(t *testing.T, k killedRun) {
	t.Helper()
	if names, _ := netns.List(NamespacePrefix + k.id); len(names) != 0 {
		t.Errorf("namespace %s%s is left", NamespacePrefix, k.id)
	}
	if _, err := os.Stat(filepath.Join(StateDir, k.id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record of run %s is left (stat: %v)", k.id, err)
	}
	// Killed processes are reaped by their new parent a moment later.
	waitUntil(t, 10*time.Second, "the run's processes gone", func() bool {
		for _, pid := range k.pids {
			if alive(pid) {
				return false
			}
		}
		return true
	})
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

// gc runs `trafficpolice sandbox gc` and checks that it removed run id.
func gc(t *testing.T, id string) {
	t.Helper()
	code, stdout, stderr := runCLI(t, "sandbox", "gc")
	if code != 0 || !strings.Contains(stdout, "removed run "+id+"\n") {
		t.Fatalf("sandbox gc: exit %d, stdout %q, stderr %q; want it to say it removed run %s", code, stdout, stderr, id)
	}
}

func TestKilledRunIsCollectedBySandboxGC(t *testing.T) {
	netnstest.RequireRoot(t)
	before := cleanCheck(t)
	k := killRun(t, before, appRunning)
	gc(t, k.id)
	wantCollected(t, k)
	if code, stdout, _ := runCLI(t, "sandbox", "gc"); code != 0 || strings.Contains(stdout, k.id) {
		t.Errorf("a second gc: exit %d, stdout %q; want nothing of run %s", code, stdout, k.id)
	}
}

var earlierRunsNote = regexp.MustCompile(`(?m)^  removed what [1-9][0-9]* earlier killed run\(s\) left behind$`)

func TestKilledRunIsCollectedByTheNextRun(t *testing.T) {
	netnstest.RequireRoot(t)
	before := cleanCheck(t)
	k := killRun(t, before, appRunning)
	code, stdout, stderr := runCLI(t, "sandbox", "run", "--", "echo", "next")
	if code != 0 || stdout != "next\n" {
		t.Fatalf("the next run: exit %d, stdout %q", code, stdout)
	}
	if !earlierRunsNote.MatchString(stderr) {
		t.Errorf("the next run does not say it removed the killed run's leftovers:\n%s", stderr)
	}
	wantCollected(t, k)
}

// A run killed between creating its namespace's file and mounting the
// namespace on it leaves a plain file (found by the soak's kills): gc
// removes it and the record, instead of failing on it for ever.
func TestGCRemovesANamespaceFileThatWasNeverMounted(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	id := "dead" + netnstest.Suffix(t)[:4]
	rec := &record{ID: id, Namespace: NamespacePrefix + id, PID: 1 << 22, Created: time.Now(), Base: StateDir}
	must(t, writeRecord(rec))
	must(t, os.MkdirAll(netns.Dir, 0o755))
	stale := filepath.Join(netns.Dir, rec.Namespace)
	must(t, os.WriteFile(stale, nil, 0o444))
	must(t, os.MkdirAll(netns.LinkDir, 0o755))
	link := filepath.Join(netns.LinkDir, rec.Namespace)
	must(t, os.Symlink(stale, link))
	t.Cleanup(func() { os.Remove(stale); os.Remove(link); os.RemoveAll(rec.dir()) })

	code, stdout, stderr := runCLI(t, "sandbox", "gc")
	if code != 0 || !strings.Contains(stdout, id) {
		t.Fatalf("gc: exit %d, stdout %q, stderr %q; want run %s removed", code, stdout, stderr, id)
	}
	for _, p := range []string{stale, link, rec.dir()} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is still there", p)
		}
	}
}
