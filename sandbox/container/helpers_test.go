package container

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"

	tpimages "github.com/trafficpolice/trafficpolice/images"
	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/sandbox/container/containertest"
)

// helperEnv makes the test binary run one container from the JSON Spec in
// this variable (for the kill -9 test), then exit with its status.
const helperEnv = "TP_CONTAINER_TEST_SPEC"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		var h helperSpec
		if err := json.Unmarshal([]byte(spec), &h); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		s := Spec{Options: Options{Namespace: h.Namespace}, Image: h.Image, ID: h.ID, Argv: h.Argv,
			NetnsPath: h.NetnsPath, StateDir: h.StateDir, Stdout: os.Stdout, Stderr: os.Stderr}
		code, err := Run(context.Background(), s)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// helperSpec is the part of a Spec the helper process gets.
type helperSpec struct {
	Namespace, Image, ID, NetnsPath, StateDir string
	Argv                                      []string
}

// env is one test's world: a containerd namespace holding the busybox
// image, a network namespace, a state folder. Its cleanup checks that no
// container, task, snapshot or mount of the test is left; the image and
// both namespaces go afterwards (containertest, netnstest).
type env struct {
	t       *testing.T
	client  *containerd.Client
	ctx     context.Context // in the containerd namespace
	ns      string
	netns   *netns.Namespace
	state   string
	image   string
	ids     []string
	running sync.WaitGroup
}

func newEnv(t *testing.T) *env {
	t.Helper()
	client := containertest.NeedDaemon(t)
	e := &env{t: t, client: client, state: t.TempDir(), image: tpimages.BusyboxRef}
	e.ns = containertest.Namespace(t, client, containertest.BusyboxArchive(t))
	e.ctx = namespaces.WithNamespace(context.Background(), e.ns)
	// Made before the cleanup is registered, so it is deleted after it.
	e.netns = netnstest.Namespace(t, "tpt")
	t.Cleanup(e.cleanup)
	return e
}

func (e *env) cleanup() {
	t := e.t
	e.running.Wait()
	for _, id := range e.ids {
		if _, err := e.client.LoadContainer(e.ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("container %s is left (err %v)", id, err)
		}
		if _, err := e.client.SnapshotService(containerd.DefaultSnapshotter).Stat(e.ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("snapshot %s is left (err %v)", id, err)
		}
		if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(id)) {
			t.Errorf("a mount of container %s is left", id)
		}
		remove(e.ctx, e.client, id)
	}
	if cs, err := e.client.Containers(e.ctx); err != nil || len(cs) != 0 {
		t.Errorf("containers left in %s: %d (err %v)", e.ns, len(cs), err)
	}
}

// spec returns a Spec for one container of this env.
func (e *env) spec(argv ...string) Spec {
	id := "tpt-" + netnstest.Suffix(e.t)
	e.ids = append(e.ids, id)
	dir := filepath.Join(e.state, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	return Spec{
		Options:   Options{Namespace: e.ns},
		Image:     e.image,
		ID:        id,
		Argv:      argv,
		NetnsPath: e.netns.Path(),
		StateDir:  dir,
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func (e *env) run(s Spec) (result, error) {
	var out, errb bytes.Buffer
	if s.Stdout == nil {
		s.Stdout = &out
	}
	if s.Stderr == nil {
		s.Stderr = &errb
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, err := Run(ctx, s)
	return result{code, out.String(), errb.String()}, err
}

func (e *env) mustRun(s Spec) result {
	e.t.Helper()
	r, err := e.run(s)
	if err != nil {
		e.t.Fatalf("run %q: %v\nstderr: %s", s.Argv, err, r.stderr)
	}
	return r
}

func contains(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("output lacks %q:\n%s", want, got)
	}
}
