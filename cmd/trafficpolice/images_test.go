package main

import (
	"encoding/base64"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// loginRegistry serves a real OCI registry on loopback that wants user
// alice's basic credentials, and returns its host.
func loginRegistry(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="trafficpolice-test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// useDockerConfig gives the CLI a docker config.json of its own with
// alice's password for host.
func useDockerConfig(t *testing.T, host, password string) {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("alice:" + password))
	writeFile(t, filepath.Join(dir, "config.json"), `{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`)
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SUDO_USER", "")
}

// TestImagesBuildAndPushThroughTheCLI packs the CLI itself (static: built
// with CGO_ENABLED=0) as a one-platform agent index, pushes the archive
// with the docker config's credentials, and sees a wrong password refused
// with what to do.
func TestImagesBuildAndPushThroughTheCLI(t *testing.T) {
	host := loginRegistry(t)
	dir := t.TempDir()
	r := tp(t, dir, "images", "build", "agent", "--binary", binary, "-o", "agent.tar", "--ref", "localhost/trafficpolice/agent:cli")
	r.want(t, 0, "images build agent --binary")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	fields := strings.Fields(lines[0])
	if len(lines) != 2 || len(fields) != 3 || fields[1] != "localhost/trafficpolice/agent:cli" || !strings.HasPrefix(strings.TrimSpace(lines[1]), "linux/") {
		t.Fatalf("images build agent printed %q, want FILE REF DIGEST and one PLATFORM DIGEST line", r.stdout)
	}
	digest := fields[2]

	useDockerConfig(t, host, "s3cret")
	dst := host + "/tools/trafficpolice-agent:cli"
	r = tp(t, dir, "images", "push", "agent.tar", dst)
	r.want(t, 0, "images push")
	if got := strings.Fields(r.stdout); len(got) != 3 || got[0] != dst || got[1] != digest {
		t.Fatalf("images push printed %q, want %s %s PLATFORMS", r.stdout, dst, digest)
	}

	useDockerConfig(t, host, "wrong")
	r = tp(t, dir, "images", "push", "agent.tar", dst)
	r.want(t, exitFailure, "images push with a wrong password")
	for _, want := range []string{"registry " + host + " refused", `user "alice"`, os.Getenv("DOCKER_CONFIG"), "docker login " + host} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q lacks %q", r.stderr, want)
		}
	}
}

func TestImagesBuildAgentRefusesBadInput(t *testing.T) {
	outside := t.TempDir()
	r := tp(t, outside, "images", "build", "agent", "-o", "a.tar")
	r.want(t, exitFailure, "images build agent outside a checkout")
	for _, want := range []string{"not in a checkout of github.com/trafficpolice/trafficpolice", "--source", "--binary"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("outside a checkout: stderr %q lacks %q", r.stderr, want)
		}
	}
	source, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	r = tp(t, outside, "images", "build", "agent", "-o", "a.tar", "--source", source, "--platform", "linux/s390x")
	r.want(t, exitFailure, "an unsupported platform")
	if !strings.Contains(r.stderr, `--platform "linux/s390x" is not supported: want one or more of linux/amd64, linux/arm64`) {
		t.Errorf("unsupported platform: stderr %q", r.stderr)
	}
	r = tp(t, outside, "images", "build", "agent", "-o", "a.tar", "--binary", binary, "--binary", binary)
	r.want(t, exitFailure, "two binaries for one platform")
	if !strings.Contains(r.stderr, "are both for linux/") {
		t.Errorf("two binaries for one platform: stderr %q", r.stderr)
	}
	r = tp(t, outside, "images", "push", "a.tar")
	if r.code == 0 || !strings.Contains(r.stderr, "accepts 2 arg(s)") {
		t.Errorf("images push with one argument: status %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(outside, "a.tar")); err == nil {
		t.Error("a failed build left a.tar")
	}
}
