package container

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"

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
