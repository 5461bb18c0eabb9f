package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// binary is trafficpolice, built once by TestMain: the command-line tests
// run it as users do, exit statuses and all.
var binary string

const testVersion = "v0.0.0-clitest"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tp-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "trafficpolice")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goTool, "build", "-ldflags", "-X main.version="+testVersion, "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build trafficpolice: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// tp runs the built binary in dir (a fresh folder when "") and returns its
// output and exit status.
func tp(t *testing.T, dir string, args ...string) result {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run trafficpolice %q: %v", args, err)
	}
	return r
}

func (r result) want(t *testing.T, code int, what string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.code, code, r.stdout, r.stderr)
	}
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// needRoot fails under CI (which runs as root and must run every test) and
// skips elsewhere when not root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (network namespaces, TUN); CI runs as root")
	}
	t.Skip("needs root")
}

func TestVersionFlagAndJSON(t *testing.T) {
	flag := tp(t, "", "--version")
	flag.want(t, 0, "--version")
	cmd := tp(t, "", "version")
	cmd.want(t, 0, "version")
	if flag.stdout != "trafficpolice "+testVersion+"\n" || cmd.stdout != flag.stdout {
		t.Errorf("--version %q, version %q; want both %q", flag.stdout, cmd.stdout, "trafficpolice "+testVersion+"\n")
	}
	j := tp(t, "", "version", "-o", "json")
	j.want(t, 0, "version -o json")
	var v map[string]string
	if err := json.Unmarshal([]byte(j.stdout), &v); err != nil || v["version"] != testVersion || v["go"] != runtime.Version() {
		t.Errorf("version -o json: %v %q", err, j.stdout)
	}
	bad := tp(t, "", "version", "-o", "yaml")
	bad.want(t, exitFailure, "version -o yaml")
	if !strings.Contains(bad.stderr, `--output "yaml" is not valid; valid: text or json`) {
		t.Errorf("stderr: %s", bad.stderr)
	}
}

// A mirrord user's file with keys trafficpolice does not honour loads, with
// one warning per key; --strict refuses them; --config-file is -f.
func TestConfigCheckWarnsAboutIgnoredKeysAndStrictRefusesThem(t *testing.T) {
	file, err := filepath.Abs("../../config/testdata/mirrord-user.json")
	if err != nil {
		t.Fatal(err)
	}
	r := tp(t, "", "config", "check", "-f", file)
	r.want(t, 0, "config check")
	warnings := 0
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if !strings.HasPrefix(line, "trafficpolice: warning: "+file+": ") || !strings.Contains(line, ": ignored — ") {
			t.Errorf("not a warning line: %q", line)
		}
		warnings++
	}
	if warnings != 10 {
		t.Errorf("%d warnings, want one for each of the 10 ignored keys:\n%s", warnings, r.stderr)
	}
	for _, want := range []string{
		`feature.fs {"local":[".+\\.js"],"mode":"read"}: ignored — the app reads the local file system`,
		`operator true: ignored — trafficpolice uses no operator: it starts its own agent`,
		`agent.labels {"owner":"alice"}: ignored — the agent's pod gets trafficpolice's defaults`,
		`feature.env.env_file ".env.local": ignored — the file's variables are not set for the app`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("no warning %q in:\n%s", want, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, `"path": "deployment/uwu-app/container/app"`) {
		t.Errorf("effective configuration:\n%s", r.stdout)
	}

	strict := tp(t, "", "config", "check", "--strict", "--config-file", file)
	strict.want(t, exitFailure, "config check --strict")
	if strict.stdout != "" || !strings.Contains(strict.stderr, file+`: feature.hostname: true is not honoured by trafficpolice (the app sees the host's hostname, not the pod's); strict mode refuses it: remove the key`) {
		t.Errorf("stdout:\n%s\nstderr:\n%s", strict.stdout, strict.stderr)
	}

	// Refused keys and typos stay errors, strict or not.
	refused := writeFile(t, filepath.Join(t.TempDir(), "c.json"), `{"skip_processes":"node","feature":{"network":{"outgoin":false}}}`)
	e := tp(t, "", "config", "check", "-f", refused)
	e.want(t, exitFailure, "refused keys")
	if !strings.Contains(e.stderr, `skip_processes: not supported yet by trafficpolice`) || !strings.Contains(e.stderr, `feature.network.outgoin: unknown key; did you mean "outgoing"?`) {
		t.Errorf("stderr:\n%s", e.stderr)
	}
}

func TestConfigSchemaPrintsTheCommittedSchema(t *testing.T) {
	r := tp(t, "", "config", "schema")
	r.want(t, 0, "config schema")
	committed, err := os.ReadFile("../../config/schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != string(committed) {
		t.Error("config schema does not print config/schema.json; regenerate it (go test ./config -run TestSchemaFileIsCurrent -update)")
	}
}

// What config check refuses, sandbox run refuses with the same message,
// before it needs root or a cluster.
func TestConfigCheckAndSandboxRunAgree(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, doc, msg string }{
		{"rollout target", `{"target":"rollout/x"}`, `target.path: not supported yet by trafficpolice (Argo rollouts are not resolved yet`},
		{"rollout object", `{"target":{"rollout":"x"}}`, `target.path: not supported yet by trafficpolice (Argo rollouts are not resolved yet`},
		{"port mapped twice", `{"feature":{"network":{"incoming":{"port_mapping":[[9333,80],[9333,81]]}}}}`,
			`feature.network.incoming.port_mapping[1]: maps local port 9333 again (first mapped to 80)`},
		{"bad filter entry", `{"feature":{"network":{"outgoing":{"filter":{"local":["tcp://google.com/24:7777"]}}}}}`,
			`feature.network.outgoing.filter.local[0] "tcp://google.com/24:7777"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".json"), tc.doc)
			check := tp(t, "", "config", "check", "-f", file)
			check.want(t, exitFailure, "config check")
			run := tp(t, "", "sandbox", "run", "-q", "-f", file, "true")
			run.want(t, exitFailure, "sandbox run")
			if !strings.Contains(check.stderr, tc.msg) || !strings.Contains(run.stderr, tc.msg) {
				t.Errorf("want %q from both\ncheck: %s\nrun:   %s", tc.msg, check.stderr, run.stderr)
			}
		})
	}
	// The command line's -t and -n meet the file's checks.
	r := tp(t, "", "sandbox", "run", "-q", "-t", "rollout/x", "true")
	r.want(t, exitFailure, "-t rollout/x")
	if !strings.Contains(r.stderr, "--target/--namespace: target.path: not supported yet by trafficpolice (Argo rollouts") {
		t.Errorf("stderr: %s", r.stderr)
	}
	r = tp(t, "", "sandbox", "run", "-q", "-t", "pod/a", "-n", "Bad_NS", "true")
	r.want(t, exitFailure, "-n Bad_NS")
	if !strings.Contains(r.stderr, `target.namespace: "Bad_NS" is not a valid namespace`) {
		t.Errorf("stderr: %s", r.stderr)
	}
}

// Without -f, .mirrord/mirrord.json in the current folder is the file, as
// in mirrord's IDE extensions.
func TestDefaultConfigFile(t *testing.T) {
	dir := t.TempDir()
	none := tp(t, dir, "config", "check")
	none.want(t, exitFailure, "config check with no file")
	if !strings.Contains(none.stderr, "give the configuration file with -f FILE (there is no .mirrord/mirrord.json here)") {
		t.Errorf("stderr: %s", none.stderr)
	}
	tp(t, dir, "route", "explain", "10.1.2.3:5432").want(t, 0, "route explain with no file")

	writeFile(t, filepath.Join(dir, ".mirrord", "mirrord.json"),
		`{"feature":{"fs":"read","network":{"outgoing":{"filter":{"block":[":5432"]}}}}}`)
	check := tp(t, dir, "config", "check")
	check.want(t, 0, "config check with .mirrord/mirrord.json")
	if !strings.Contains(check.stdout, `"block": [":5432"]`) ||
		!strings.Contains(check.stderr, "trafficpolice: reading .mirrord/mirrord.json (no -f given)") ||
		!strings.Contains(check.stderr, `warning: .mirrord/mirrord.json: feature.fs "read": ignored — the app reads the local file system`) {
		t.Errorf("stdout:\n%s\nstderr:\n%s", check.stdout, check.stderr)
	}
	tp(t, dir, "route", "explain", "10.1.2.3:5432").want(t, exitBlocked, "route explain with .mirrord/mirrord.json")
	// -f wins over the default file.
	other := writeFile(t, filepath.Join(dir, "other.json"), `{}`)
	tp(t, dir, "route", "explain", "-f", other, "10.1.2.3:5432").want(t, 0, "route explain -f other.json")
}

func TestRouteExplainJSONAndExitStatus(t *testing.T) {
	r := tp(t, "", "route", "explain", "-o", "json", "--block", "prod-db", "prod-db:5432")
	r.want(t, exitBlocked, "a blocked destination")
	var e explanation
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if e.Route != "block" || e.Rule != "block prod-db" || e.Host != "prod-db" || e.Proto != "tcp" || e.Resolve == nil || e.Dest != "prod-db:5432" {
		t.Errorf("got %+v", e)
	}
	r = tp(t, "", "route", "explain", "-o", "json", "--local", ":8888", "udp://127.0.0.1:8888")
	r.want(t, 0, "a local destination")
	e = explanation{}
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if e.Route != "local" || e.Rule != "local :8888" || e.Address != "127.0.0.1:8888" || e.Proto != "udp" || e.Resolve != nil {
		t.Errorf("got %+v", e)
	}
	text := tp(t, "", "route", "explain", "--block", "udp://:53", "udp://10.0.0.10:53")
	text.want(t, exitBlocked, "text output, blocked")
	if !strings.Contains(text.stdout, "route:   block") {
		t.Errorf("stdout: %s", text.stdout)
	}
	tp(t, "", "route", "explain", "x:99999").want(t, exitFailure, "a bad destination")

	// An IP destination: a name rule may match it in a run, which explain
	// cannot know without resolving; it says so.
	lit := tp(t, "", "route", "explain", "--block", "prod-db", "10.96.0.5:5432")
	lit.want(t, 0, "an IP destination beside a name rule")
	if !strings.Contains(lit.stdout, "the rules naming prod-db also match this address if a name resolves to it") {
		t.Errorf("stdout: %s", lit.stdout)
	}
}

// Every command shows examples in its help; sandbox run's says it needs root.
func TestEveryCommandHasExamples(t *testing.T) {
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			walk(sub, append(slices.Clone(path), sub.Name()))
		}
	}
	walk(newRootCommand(), nil)
	if len(paths) < 15 {
		t.Fatalf("found only %d commands", len(paths))
	}
	for _, p := range paths {
		r := tp(t, "", append(slices.Clone(p), "--help")...)
		r.want(t, 0, strings.Join(p, " ")+" --help")
		if !strings.Contains(r.stdout, "Examples:\n") {
			t.Errorf("trafficpolice %s --help shows no examples", strings.Join(p, " "))
		}
	}
	r := tp(t, "", "sandbox", "run", "--help")
	for _, want := range []string{"Runs as root (sudo) or as an ordinary user", "--rootless", "-t, --target", "--config-file", "--steal", "--strict", "trafficpolice's own failures exit 125"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("sandbox run --help lacks %q", want)
		}
	}
}

// Everything from the first argument on is the command's; its exit status
// passes through; trafficpolice's own failures exit 125.
func TestSandboxRunCommandLineAndExitStatus(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()

	r := tp(t, dir, "sandbox", "run", "-q", "sh", "-c", "echo hi")
	r.want(t, 0, "sh -c 'echo hi'")
	if r.stdout != "hi\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = tp(t, dir, "sandbox", "run", "-q", "sh", "-c", "echo $0 $1 $2", "x", "--its-flag", "-q")
	r.want(t, 0, "the command's own flags")
	if r.stdout != "x --its-flag -q\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = tp(t, dir, "sandbox", "run", "-q", "--", "sh", "-c", "echo dashes")
	r.want(t, 0, "-- before the command")
	if r.stdout != "dashes\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	tp(t, dir, "sandbox", "run", "-q", "sh", "-c", "exit 2").want(t, 2, "the command's exit 2")
	tp(t, dir, "sandbox", "run", "-q", "sh", "-c", "kill -TERM $$").want(t, 128+int(syscall.SIGTERM), "killed by SIGTERM")
	tp(t, dir, "sandbox", "run", "-q", "no-such-command-"+filepath.Base(dir)).want(t, 127, "a command that is not found")
	notExec := writeFile(t, filepath.Join(dir, "not-executable"), "#!/bin/sh\n")
	tp(t, dir, "sandbox", "run", "-q", notExec).want(t, 126, "a command that cannot be executed")
	bad := writeFile(t, filepath.Join(dir, "bad.json"), `{"feature":{"network":{"outgoin":false}}}`)
	tp(t, dir, "sandbox", "run", "-q", "-f", bad, "true").want(t, exitFailure, "a bad configuration")
	none := tp(t, dir, "sandbox", "run", "-q")
	none.want(t, exitFailure, "no command")
	if !strings.Contains(none.stderr, "give the command to run, as in `trafficpolice sandbox run ./app --its-flags`") {
		t.Errorf("stderr: %s", none.stderr)
	}
}

// sandbox run prints the warnings before it starts the command; --strict
// refuses the file and starts nothing. A file that config check accepts runs.
func TestSandboxRunWarnsBeforeStartingAndStrictRefuses(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, ".mirrord", "mirrord.json"), `{"feature":{"fs":"read","hostname":true},"operator":true}`)
	tp(t, dir, "config", "check").want(t, 0, "config check")

	r := tp(t, dir, "sandbox", "run", "sh", "-c", "echo ran")
	r.want(t, 0, "sandbox run with ignored keys")
	if r.stdout != "ran\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	warn := strings.Index(r.stderr, `warning: .mirrord/mirrord.json: feature.fs "read": ignored — the app reads the local file system`)
	start := strings.Index(r.stderr, "starting sh -c echo ran")
	if warn < 0 || start < 0 || warn > start || strings.Count(r.stderr, ": ignored — ") != 3 {
		t.Errorf("want three warnings, before the start:\n%s", r.stderr)
	}

	s := tp(t, dir, "sandbox", "run", "--strict", "sh", "-c", "echo ran")
	s.want(t, exitFailure, "sandbox run --strict")
	if s.stdout != "" || !strings.Contains(s.stderr, `.mirrord/mirrord.json: operator: true is not honoured by trafficpolice`) || strings.Contains(s.stderr, "starting") {
		t.Errorf("stdout %q\nstderr:\n%s", s.stdout, s.stderr)
	}
}

// --steal asks for the pod's incoming traffic: against an agent that cannot
// steal, the run stops; without --steal (mirror, the default) it goes on.
func TestSandboxRunSteal(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	token := writeFile(t, filepath.Join(dir, "token"), "clitest-"+filepath.Base(dir))
	address := startAgent(t, token, "--incoming=false")

	mirror := tp(t, dir, "sandbox", "run", "-q", "--agent-address", address, "--agent-token-file", token, "true")
	mirror.want(t, 0, "mirror (the default) with an agent that cannot")
	steal := tp(t, dir, "sandbox", "run", "-q", "--agent-address", address, "--agent-token-file", token, "--steal", "true")
	steal.want(t, exitFailure, "--steal with an agent that cannot")
	if !strings.Contains(steal.stderr, `feature.network.incoming is "steal", but the agent cannot steal the pod's traffic`) {
		t.Errorf("stderr:\n%s", steal.stderr)
	}
}

// startAgent starts `trafficpolice agent` with a new TLS key on a free
// loopback port and returns its address; it is stopped when the test
// ends. The fingerprint the agent logs goes to the token file's second
// line, for runs to pin, as an operator would pass it on.
func startAgent(t *testing.T, tokenFile string, args ...string) string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "agent.key")
	cmd := exec.Command(binary, append([]string{"agent", "--listen", "127.0.0.1:0", "--token-file", tokenFile, "--tls-key", key, "--idle-exit", "10m"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	found := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			// msg="agent listening" address=127.0.0.1:43807 tls=1.3 fingerprint=sha256:... idle_exit=10m0s
			line := sc.Text()
			if !strings.Contains(line, `msg="agent listening"`) {
				continue
			}
			var got [2]string
			for i, key := range []string{" address=", " fingerprint="} {
				if _, rest, ok := strings.Cut(line, key); ok {
					got[i], _, _ = strings.Cut(rest, " ")
				}
			}
			found <- got
		}
		close(found)
	}()
	select {
	case got, ok := <-found:
		if !ok {
			t.Fatal("the agent ended without listening")
		}
		if !strings.HasPrefix(got[1], "sha256:") {
			t.Fatalf("the agent with --tls-key logged no fingerprint at start (got %q)", got[1])
		}
		tok, err := os.ReadFile(tokenFile)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, tokenFile, strings.TrimSpace(string(tok))+"\n"+got[1]+"\n")
		return got[0]
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not say where it listens within 30 s")
	}
	return ""
}

// sandbox gc -o json lists the runs it removed: here one whose CLI was
// killed with SIGKILL.
func TestSandboxGCJSON(t *testing.T) {
	needRoot(t)
	cmd := exec.Command(binary, "sandbox", "run", "-q", "sh", "-c", "echo started; exec sleep 600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		started <- line == "started\n"
	}()
	select {
	case ok := <-started:
		if !ok {
			t.Fatal("the run did not start its command")
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the run did not start its command within 60 s")
	}
	id := runIDOf(t, cmd.Process.Pid)
	cmd.Process.Kill()
	cmd.Wait()

	r := tp(t, "", "sandbox", "gc", "-o", "json")
	r.want(t, 0, "sandbox gc -o json")
	var report struct {
		Removed []string `json:"removed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &report); err != nil || report.Removed == nil {
		t.Fatalf("%v: %q", err, r.stdout)
	}
	if _, err := os.Stat(filepath.Join("/run/trafficpolice", id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run %s is still recorded after gc: %v", id, err)
	}
	if !slices.Contains(report.Removed, id) {
		// A run started by another test at the same moment collects dead runs too.
		t.Logf("run %s was removed, but not by this gc (removed %q): another run collected it first", id, report.Removed)
	}
}

// runIDOf finds the run whose CLI has this pid, from the runs' records.
func runIDOf(t *testing.T, pid int) string {
	t.Helper()
	entries, err := os.ReadDir("/run/trafficpolice")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/run/trafficpolice", e.Name(), "state.json"))
		if err != nil {
			continue
		}
		var rec struct {
			ID  string `json:"id"`
			PID int    `json:"pid"`
		}
		if json.Unmarshal(b, &rec) == nil && rec.PID == pid {
			return rec.ID
		}
	}
	t.Fatalf("no run recorded for pid %d", pid)
	return ""
}

func TestLsWithoutAClusterSaysWhichKubeconfig(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.yaml")
	r := tp(t, dir, "ls", "--kubeconfig", missing)
	r.want(t, 125, "ls with a missing kubeconfig")
	if !strings.Contains(r.stderr, missing) {
		t.Errorf("ls does not name the kubeconfig it tried:\n%s", r.stderr)
	}
	r = tp(t, dir, "ls", "-o", "yaml")
	if r.code == 0 || !strings.Contains(r.stderr, `--output "yaml" is not valid; valid: text or json`) {
		t.Errorf("ls -o yaml: exit %d\n%s", r.code, r.stderr)
	}
	// Completion fails quietly without a cluster: the shell gets nothing.
	r = tp(t, dir, "__complete", "sandbox", "run", "--kubeconfig", missing, "--target", "")
	r.want(t, 0, "completion without a cluster")
	if strings.Contains(r.stdout, "deployment/") {
		t.Errorf("completion without a cluster offered targets:\n%s", r.stdout)
	}
}

// `agent fingerprint` creates a missing key (mode 0600) and prints the
// same fingerprint for it every time, for scripts.
func TestAgentFingerprint(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "agent.key")
	first := tp(t, dir, "agent", "fingerprint", "--tls-key", key)
	first.want(t, 0, "agent fingerprint of a new key")
	fp := strings.TrimSpace(first.stdout)
	if !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+43 || !strings.Contains(first.stderr, "created a new TLS key") {
		t.Errorf("stdout %q, stderr %q; want one sha256: fingerprint and a note that the key was created", first.stdout, first.stderr)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v; want mode 0600", fi, err)
	}
	again := tp(t, dir, "agent", "fingerprint", "--tls-key", key)
	again.want(t, 0, "agent fingerprint of the same key")
	if strings.TrimSpace(again.stdout) != fp || again.stderr != "" {
		t.Errorf("second run: stdout %q stderr %q; want %s alone", again.stdout, again.stderr, fp)
	}
	tp(t, dir, "agent", "fingerprint").want(t, exitFailure, "agent fingerprint without --tls-key")
}
