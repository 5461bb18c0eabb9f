package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// runCLI runs the command line in-process and returns stdout and the error.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestConfigCheckExplainsTheSeedsBrokenSamples(t *testing.T) {
	_, err := runCLI(t, "config", "check", "-f", "../../config/testdata/seed-filter.json")
	if err == nil || !strings.Contains(err.Error(), "2:3") || !strings.Contains(err.Error(), `missing its opening quote`) {
		t.Errorf("seed-filter.json: %v", err)
	}
	_, err = runCLI(t, "config", "check", "-f", "../../config/testdata/seed-uwu.json")
	if err == nil || !strings.Contains(err.Error(), "typographic quote") || !strings.Contains(err.Error(), "2:13") {
		t.Errorf("seed-uwu.json: %v", err)
	}
	for _, f := range []string{"seed-filter.fixed.json", "seed-uwu.fixed.json"} {
		out, err := runCLI(t, "config", "check", "-f", "../../config/testdata/"+f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
		// The effective configuration shows the defaults filled in.
		if !strings.Contains(out, `"communication_timeout": 30`) {
			t.Errorf("%s: effective config lacks the defaults:\n%s", f, out)
		}
	}
}

func TestConfigCheckNamesABadFilterEntry(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(p, []byte(`{"feature":{"network":{"outgoing":{"filter":{"local":["app-db","tcp://google.com/24:7777"]}}}}}`), 0o644)
	_, err := runCLI(t, "config", "check", "-f", p)
	if err == nil || !strings.Contains(err.Error(), `feature.network.outgoing.filter.local[1] "tcp://google.com/24:7777"`) {
		t.Fatalf("got %v", err)
	}
}

func TestRouteExplain(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "cfg.json")
	os.WriteFile(empty, []byte(`{}`), 0o644)
	out, err := runCLI(t, "route", "explain", "-f", empty, "--local", ":8888", "127.0.0.1:8888")
	if err != nil || !strings.Contains(out, "route:   local") || !strings.Contains(out, "rule:    local :8888") {
		t.Errorf("--local :8888 127.0.0.1:8888: %v\n%s", err, out)
	}
	seed := filepath.Join(dir, "seed.json")
	os.WriteFile(seed, []byte(`{"feature":{"network":{"outgoing":{"filter":{"local":["app-db"]}}}}}`), 0o644)
	out, err = runCLI(t, "route", "explain", "-f", seed, "app-db:5432")
	if err != nil || !strings.Contains(out, "resolve: local (local app-db)") || !strings.Contains(out, "route:   local") {
		t.Errorf("app-db: %v\n%s", err, out)
	}
	out, err = runCLI(t, "route", "explain", "-f", seed, "uwu-service:80")
	if err != nil || !strings.Contains(out, "resolve: remote") || !strings.Contains(out, "route:   remote") {
		t.Errorf("uwu-service:80: %v\n%s", err, out)
	}
	out, err = runCLI(t, "route", "explain", "--block", "udp://:53", "udp://10.0.0.10:53")
	var exit *exitError
	if !asExit(err, &exit) || exit.code != exitBlocked || !strings.Contains(out, "route:   block") {
		t.Errorf("block: %v\n%s", err, out)
	}
	out, err = runCLI(t, "route", "explain", "--no-agent", "10.1.2.3:80")
	if err != nil || !strings.Contains(out, "route:   local") {
		t.Errorf("no agent: %v\n%s", err, out)
	}
	_, err = runCLI(t, "route", "explain", "--local", "meow://", "x:1")
	if err == nil || !strings.Contains(err.Error(), `--local "meow://"`) {
		t.Errorf("bad flag entry: %v", err)
	}
	_, err = runCLI(t, "route", "explain", "x:99999")
	if err == nil || !strings.Contains(err.Error(), "1 to 65535") {
		t.Errorf("bad port: %v", err)
	}
}

func TestVersionComesFromTheLdflagElseFromGoInstall(t *testing.T) {
	installed := &debug.BuildInfo{Main: debug.Module{Path: "github.com/trafficpolice/trafficpolice", Version: "v1.2.3"}}
	checkout := &debug.BuildInfo{
		Main:     debug.Module{Path: "github.com/trafficpolice/trafficpolice", Version: "v0.0.0-20260101000000-4f41123abcde+dirty"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "4f41123abcdef"}},
	}
	devel := &debug.BuildInfo{Main: debug.Module{Path: "github.com/trafficpolice/trafficpolice", Version: "(devel)"}}
	for _, c := range []struct {
		name, ldflag string
		info         *debug.BuildInfo
		want         string
	}{
		{"make build or release", "v1.2.4", installed, "v1.2.4"},
		{"go install …@v1.2.3", "dev", installed, "v1.2.3"},
		{"go build in a checkout", "dev", checkout, "dev"},
		{"go build without VCS stamp", "dev", devel, "dev"},
	} {
		if got := effectiveVersion(c.ldflag, c.info); got != c.want {
			t.Errorf("%s: effectiveVersion(%q, %q) = %q, want %q", c.name, c.ldflag, c.info.Main.Version, got, c.want)
		}
	}
}
