package container

import (
	"bytes"
	"encoding/base64"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	tpimages "github.com/trafficpolice/trafficpolice/images"
)

// TestMissingImageIsPulledWithProgress serves the busybox image from a
// registry on loopback: Run pulls it, says so, and runs it.
func TestMissingImageIsPulledWithProgress(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	ref := ln.Addr().String() + "/trafficpolice/busybox:pull"
	r, err := tpimages.Busybox("/bin/busybox", ref)
	if err != nil {
		t.Fatal(err)
	}
	img, _, cleanup, err := tpimages.Build(r)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}

	s := e.spec("echo", "pulled and ran")
	s.Image = ref
	var progress bytes.Buffer
	s.PullProgress = &progress
	if r := e.mustRun(s); r.stdout != "pulled and ran\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	if !strings.Contains(progress.String(), "pulling "+ref) || !strings.Contains(progress.String(), "✓ pulled "+ref) {
		t.Fatalf("progress %q, want the pull's start and end", progress.String())
	}
	// The second run finds it.
	s = e.spec("true")
	s.Image = ref
	progress.Reset()
	s.PullProgress = &progress
	e.mustRun(s)
	if progress.Len() != 0 {
		t.Fatalf("pulled again: %q", progress.String())
	}
}

// TestPullUsesTheDockerConfigCredentials serves the image from a registry
// that wants a login: the pull uses the credentials of the docker
// config.json (as `docker login` wrote it), and a wrong password stops the
// run with the registry named and what to do.
func TestPullUsesTheDockerConfigCredentials(t *testing.T) {
	e := newEnv(t)
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
	host := ln.Addr().String()

	r, err := tpimages.Busybox("/bin/busybox", host+"/trafficpolice/busybox:auth")
	if err != nil {
		t.Fatal(err)
	}
	img, _, cleanup, err := tpimages.Build(r)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	for _, tag := range []string{"auth", "auth2"} {
		ref, err := name.NewTag(host+"/trafficpolice/busybox:"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"})); err != nil {
			t.Fatal(err)
		}
	}

	config := func(password string) string {
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte("alice:" + password))
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("DOCKER_CONFIG", dir)
		t.Setenv("HOME", t.TempDir())
		return filepath.Join(dir, "config.json")
	}
	config("s3cret")
	s := e.spec("echo", "pulled with credentials")
	s.Image = host + "/trafficpolice/busybox:auth"
	if r := e.mustRun(s); r.stdout != "pulled with credentials\n" {
		t.Fatalf("stdout %q", r.stdout)
	}

	file := config("wrong")
	s = e.spec("true")
	s.Image = host + "/trafficpolice/busybox:auth2"
	_, err = e.run(s)
	if err == nil {
		t.Fatal("a pull with a wrong password worked")
	}
	for _, want := range []string{"registry " + host + " refused", "docker login " + host, file} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
