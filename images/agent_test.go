package images_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/trafficpolice/trafficpolice/images"
	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/sandbox/container"
	"github.com/trafficpolice/trafficpolice/sandbox/container/containertest"
)

// buildCLI builds the static trafficpolice binary, as `make build` does.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "trafficpolice")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/trafficpolice")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the CLI: %v\n%s", err, out)
	}
	return bin
}

// TestAgentImageIsReproducibleAndStartsInContainerd is the whole path:
// the CLI cross-compiles itself for linux/amd64 and linux/arm64 and packs
// both as one image index, twice (same digests, same bytes), each
// platform's image holds a static binary for its machine, the archive
// imports into containerd, and `trafficpolice agent` from the image
// listens inside a network namespace and stops on SIGTERM.
func TestAgentImageIsReproducibleAndStartsInContainerd(t *testing.T) {
	client := containertest.NeedDaemon(t)
	bin := buildCLI(t)
	source, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var outputs []string
	for i, name := range []string{"a.tar", "b.tar"} {
		if i == 1 {
			// A later build, at another time and from another folder.
			time.Sleep(1100 * time.Millisecond)
		}
		cmd := exec.Command(bin, "images", "build", "agent", "-o", name, "--ref", "localhost/trafficpolice/agent:test", "--source", source)
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("images build agent: %v\n%s%s", err, out, stderr.Bytes())
		}
		outputs = append(outputs, string(out))
	}
	lines := strings.Split(strings.TrimSpace(outputs[0]), "\n")
	fields := strings.Fields(lines[0])
	if len(lines) != 3 || len(fields) != 3 || !strings.HasPrefix(fields[2], "sha256:") ||
		!strings.HasPrefix(strings.TrimSpace(lines[1]), "linux/amd64\tsha256:") || !strings.HasPrefix(strings.TrimSpace(lines[2]), "linux/arm64\tsha256:") {
		t.Fatalf("images build agent printed %q, want FILE REF DIGEST and a PLATFORM DIGEST line for linux/amd64 and linux/arm64", outputs[0])
	}
	digest := fields[2]
	if strings.Replace(outputs[1], "b.tar", "a.tar", 1) != outputs[0] {
		t.Fatalf("two builds gave\n%s\nthen\n%s", outputs[0], outputs[1])
	}
	a, _ := os.ReadFile(filepath.Join(dir, "a.tar"))
	b, _ := os.ReadFile(filepath.Join(dir, "b.tar"))
	if !bytes.Equal(a, b) {
		t.Fatal("the two archives differ")
	}
	checkAgentPlatforms(t, filepath.Join(dir, "a.tar"), digest)

	// Import through the CLI, as a user would.
	ns := containertest.Namespace(t, client)
	out, err := exec.Command(bin, "images", "import", "-n", ns, filepath.Join(dir, "a.tar")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "localhost/trafficpolice/agent:test\t"+digest) {
		t.Fatalf("images import: %v\n%s", err, out)
	}

	n := netnstest.Namespace(t, "tpt")
	netnstest.LoopbackUp(t, n)
	id := n.Name()
	sigs := make(chan os.Signal, 1)
	var logs lockedBuffer
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := container.Run(context.Background(), container.Spec{
			Options:   container.Options{Namespace: ns, Env: []string{"TRAFFICPOLICE_AGENT_TOKEN=test-token"}},
			Image:     "localhost/trafficpolice/agent:test",
			ID:        id,
			Argv:      []string{"--listen", "127.0.0.1:7777", "--incoming=false"},
			NetnsPath: n.Path(),
			StateDir:  t.TempDir(),
			Stdout:    &logs,
			Stderr:    &logs,
			Signals:   sigs,
		})
		done <- result{code, err}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := netns.DialInside(ctx, n, "tcp", "127.0.0.1:7777")
		cancel()
		if err == nil {
			c.Close()
			break
		}
		select {
		case r := <-done:
			t.Fatalf("the agent ended before it listened: status %d, %v\n%s", r.code, r.err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			sigs <- syscall.SIGKILL
			<-done
			t.Fatalf("the agent does not listen on 127.0.0.1:7777 in its namespace: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	sigs <- syscall.SIGTERM
	select {
	case r := <-done:
		if r.err != nil || r.code != 0 {
			t.Fatalf("the agent ended with status %d, %v on SIGTERM; want 0\n%s", r.code, r.err, logs.String())
		}
	case <-time.After(20 * time.Second):
		sigs <- syscall.SIGKILL
		<-done
		t.Fatalf("the agent did not stop on SIGTERM\n%s", logs.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// checkAgentPlatforms reads the archive as a registry client would (an
// OCI layout) and wants, under the index digest, an image per platform
// whose binary is a static program for that platform's machine.
func checkAgentPlatforms(t *testing.T, archive, digest string) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xf", archive, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("untar: %v\n%s", err, out)
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil || len(tm.Manifests) != 1 || tm.Manifests[0].Digest.String() != digest {
		t.Fatalf("index.json: %+v, %v; want the index %s alone", tm, err, digest)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	if len(im.Manifests) != len(machines) {
		t.Fatalf("the index lists %d images, want linux/amd64 and linux/arm64", len(im.Manifests))
	}
	for _, d := range im.Manifests {
		want, ok := machines[d.Platform.Architecture]
		if !ok || d.Platform.OS != "linux" {
			t.Fatalf("unexpected platform %s", d.Platform)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil || cf.Architecture != d.Platform.Architecture {
			t.Fatalf("%s: config architecture %q, %v", d.Platform, cf.Architecture, err)
		}
		bin := filepath.Join(t.TempDir(), "trafficpolice")
		f, err := os.Create(bin)
		if err != nil {
			t.Fatal(err)
		}
		rc := mutate.Extract(img)
		tr := tar.NewReader(rc)
		found := false
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if h.Name == strings.TrimPrefix(images.AgentBinary, "/") {
				io.Copy(f, tr)
				found = true
				break
			}
		}
		rc.Close()
		f.Close()
		if !found {
			t.Fatalf("%s: the image has no %s", d.Platform, images.AgentBinary)
		}
		ef, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: %v", d.Platform, err)
		}
		for _, p := range ef.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatalf("%s: the binary is dynamically linked", d.Platform)
			}
		}
		if ef.Machine != want {
			t.Fatalf("%s: the binary is for %v, want %v", d.Platform, ef.Machine, want)
		}
		ef.Close()
	}
}
