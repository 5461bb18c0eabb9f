package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/preflight"
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
		if c.Status != preflight.OK {
			t.Errorf("%s: %s %s (%s)", c.Check, c.Status, c.Detail, c.Fix)
		}
	}
	if got, want := strings.Join(checks, " "), "privileges tun netns nat state"; got != want {
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
