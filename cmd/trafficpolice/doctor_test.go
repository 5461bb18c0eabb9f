package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/preflight"
	"github.com/trafficpolice/trafficpolice/sandbox"
)

func TestDoctorPassesOnThisHostAndSaysSoInJSON(t *testing.T) {
	needRoot(t)
	r := tp(t, "", "doctor", "-o", "json")
	r.want(t, 0, "doctor as root")
	var rs []preflight.Result
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil {
		t.Fatalf("doctor -o json: %v\n%s", err, r.stdout)
	}
	var checks []string
	for _, c := range rs {
		checks = append(checks, c.Check)
		// Whether the host forwards is the host's choice: a warning
		// (preflight's own test checks it says the truth).
		if c.Status != preflight.OK && (c.Check != "kernel path" || c.Status != preflight.Warn) {
			t.Errorf("%s: %s %s (%s)", c.Check, c.Status, c.Detail, c.Fix)
		}
	}
	if got, want := strings.Join(checks, " "), "privileges tun netns nat kernel path kernel sockets state"; got != want {
		t.Errorf("checks %q, want %q", got, want)
	}
}

func TestDoctorFailsWithTheFix(t *testing.T) {
	needRoot(t)
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	r := tp(t, "", "doctor", "--image", "localhost/dev:1", "--containerd-address", sock)
	r.want(t, 1, "doctor with containerd missing")
	if !strings.Contains(r.stdout, "fail containerd") || !strings.Contains(r.stdout, "fix: install and start containerd") {
		t.Errorf("doctor output:\n%s\nwant the containerd check failed, with its fix", r.stdout)
	}
	// sandbox run makes the same check before it starts anything.
	r = tp(t, "", "sandbox", "run", "-q", "--image", "localhost/dev:1", "--containerd-address", sock, "true")
	r.want(t, 125, "sandbox run with containerd missing")
	if !strings.Contains(r.stderr, "preflight containerd") || strings.Contains(r.stderr, "namespace ready") {
		t.Errorf("sandbox run stderr:\n%s\nwant the preflight failure and nothing started", r.stderr)
	}
}

func TestDoctorRefusesABadOutputFormat(t *testing.T) {
	r := tp(t, "", "doctor", "-o", "yaml")
	r.want(t, 125, "doctor -o yaml")
	if !strings.Contains(r.stderr, `--output "yaml" is not valid; valid: text or json`) {
		t.Errorf("stderr: %s", r.stderr)
	}
}

// TestFailingPreflightStartsNothing: a check that fails while the others
// pass (they run at the same time) stops sandbox run with its error before
// the app starts, and the run leaves no namespace and no record behind.
func TestFailingPreflightStartsNothing(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "app-ran")
	sock := filepath.Join(dir, "containerd.sock")
	before, err := netns.List(sandbox.NamespacePrefix)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "sandbox", "run", "--image", "localhost/dev:1", "--containerd-address", sock, "--", "touch", marker)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
		t.Fatalf("sandbox run with containerd missing: %v, want exit status %d\nstderr:\n%s", err, exitFailure, stderr.String())
	}
	if !strings.Contains(stderr.String(), "preflight containerd: --image localhost/dev:1 needs containerd") {
		t.Errorf("stderr:\n%s\nwant the containerd check's error", stderr.String())
	}
	if strings.Contains(stderr.String(), "namespace ready") || strings.Contains(stderr.String(), "starting ") {
		t.Errorf("stderr:\n%s\nwant nothing started", stderr.String())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the app ran (%s exists)", marker)
	}
	// Other runs on this host may come and go meanwhile: a namespace left by
	// this one is a new one whose record names its process, or has none.
	after, err := netns.List(sandbox.NamespacePrefix)
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	for _, name := range after {
		if slices.Contains(before, name) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sandbox.StateDir, strings.TrimPrefix(name, sandbox.NamespacePrefix), "state.json"))
		var rec struct{ PID int }
		if err != nil || json.Unmarshal(b, &rec) != nil || rec.PID == pid {
			t.Errorf("namespace %s is left behind (record: %s, %v)", name, b, err)
		}
	}
	records, _ := filepath.Glob(filepath.Join(sandbox.StateDir, "*", "state.json"))
	for _, path := range records {
		b, err := os.ReadFile(path)
		var rec struct{ PID int }
		if err == nil && json.Unmarshal(b, &rec) == nil && rec.PID == pid {
			t.Errorf("the failed run left its record %s:\n%s", path, b)
		}
	}
}
