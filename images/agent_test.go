package images_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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

// TestAgentImageIsReproducibleAndStartsInContainerd is the whole path: the
// CLI packs itself twice (same digest), the archive imports into
// containerd, and `trafficpolice agent` from the image listens inside a
// network namespace and stops on SIGTERM.
func TestAgentImageIsReproducibleAndStartsInContainerd(t *testing.T) {
	client := containertest.NeedDaemon(t)
	bin := buildCLI(t)
	dir := t.TempDir()
	var digests []string
	for i, name := range []string{"a.tar", "b.tar"} {
		if i == 1 {
			// A later build, at another time and from another folder.
			time.Sleep(1100 * time.Millisecond)
		}
		cmd := exec.Command(bin, "images", "build", "agent", "-o", name, "--ref", "localhost/trafficpolice/agent:test")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("images build agent: %v\n%s", err, out)
		}
		fields := strings.Fields(string(out))
		if len(fields) != 3 || !strings.HasPrefix(fields[2], "sha256:") {
			t.Fatalf("images build agent printed %q, want FILE REF DIGEST", out)
		}
		digests = append(digests, fields[2])
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds gave %s and %s", digests[0], digests[1])
	}
	a, _ := os.ReadFile(filepath.Join(dir, "a.tar"))
	b, _ := os.ReadFile(filepath.Join(dir, "b.tar"))
	if !bytes.Equal(a, b) {
		t.Fatal("the two archives differ")
	}

	// Import through the CLI, as a user would.
	ns := containertest.Namespace(t, client)
	out, err := exec.Command(bin, "images", "import", "-n", ns, filepath.Join(dir, "a.tar")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "localhost/trafficpolice/agent:test\t"+digests[0]) {
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
