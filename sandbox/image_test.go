package sandbox

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"

	"github.com/trafficpolice/trafficpolice/images"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/sandbox/container"
	"github.com/trafficpolice/trafficpolice/sandbox/container/containertest"
)

// imageEnv is a containerd namespace of the test's own holding the busybox
// test image; its cleanup (after the test's other checks) fails the test
// if a container, task or snapshot of its runs is left.
type imageEnv struct {
	client *containerd.Client
	ns     string
	mu     sync.Mutex
	ids    []string
}

func newImageEnv(t *testing.T) *imageEnv {
	t.Helper()
	netnstest.RequireRoot(t)
	client := containertest.NeedDaemon(t)
	e := &imageEnv{client: client, ns: containertest.Namespace(t, client, containertest.BusyboxArchive(t))}
	t.Cleanup(func() {
		ctx := namespaces.WithNamespace(context.Background(), e.ns)
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, id := range e.ids {
			if _, err := client.LoadContainer(ctx, id); !errdefs.IsNotFound(err) {
				t.Errorf("container %s left behind (%v)", id, err)
			}
			if _, err := client.SnapshotService(containerd.DefaultSnapshotter).Stat(ctx, id); !errdefs.IsNotFound(err) {
				t.Errorf("snapshot %s left behind (%v)", id, err)
			}
		}
	})
	return e
}

// opt runs the app in a busybox container of this env.
func (e *imageEnv) opt(o *Options) {
	o.Image = images.BusyboxRef
	o.Container = container.Options{Namespace: e.ns}
	started := o.Started
	o.Started = func(ns string, pid int) {
		e.mu.Lock()
		e.ids = append(e.ids, ns)
		e.mu.Unlock()
		if started != nil {
			started(ns, pid)
		}
	}
}

func serveHTTP(t *testing.T, body string) string {
	t.Helper()
	ln := hostListener(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return portOf(ln)
}

// firstWrite remembers when its first byte arrived.
type firstWrite struct {
	lockedBuffer
	once sync.Once
	at   time.Time
}

func (f *firstWrite) Write(p []byte) (int, error) {
	f.once.Do(func() { f.at = time.Now() })
	return f.lockedBuffer.Write(p)
}

func TestImageRunIsPolicedLikeAProcess(t *testing.T) {
	e := newImageEnv(t)
	cleanCheck(t)
	open := serveHTTP(t, "hello from the host")
	blocked := serveHTTP(t, "must not be seen")
	flowLog := t.TempDir() + "/flows.jsonl"
	script := fmt.Sprintf("wget -q -O- http://127.0.0.1:%s/ && echo; wget -q -O- http://127.0.0.1:%s/; echo blocked=$?; exit 5", open, blocked)
	var out firstWrite
	begin := time.Now()
	r := run(t, nil, ExtraRules{Local: []string{":" + open, ":" + blocked}, Block: []string{":" + blocked}},
		[]string{"sh", "-c", script}, e.opt, func(o *Options) { o.FlowLog = flowLog; o.Stdout = &out })
	if r.err != nil || r.code != 5 {
		t.Fatalf("want the script's status 5: %+v", r)
	}
	got := out.String()
	t.Logf("first output of the container %v after Run began", out.at.Sub(begin))
	contains(t, got, "hello from the host\n")
	contains(t, got, "blocked=1\n")
	if strings.Contains(got, "must not be seen") {
		t.Fatalf("a blocked flow got through: %q", got)
	}
	flows := map[string]router.FlowRecord{}
	for _, rec := range readFlowLog(t, flowLog) {
		flows[rec.Dst] = rec
	}
	// wget's request and the server's headers vary in length; the body
	// alone is a floor for what came in.
	if f := flows["127.0.0.1:"+open]; f.Proto != "tcp" || f.Route != "local" || f.Rule != "local :"+open ||
		f.BytesOut == 0 || f.BytesIn <= int64(len("hello from the host")) || f.Error != "" {
		t.Errorf("flow to the open port: %+v; want tcp, local by \"local :%s\", a request out and the answer in", f, open)
	}
	if f := flows["127.0.0.1:"+blocked]; f.Proto != "tcp" || f.Route != "block" || f.Rule != "block :"+blocked || f.BytesOut != 0 || f.BytesIn != 0 {
		t.Errorf("flow to the blocked port: %+v; want tcp, block by \"block :%s\", no bytes", f, blocked)
	}
}

func TestImageRunAsInvokingUserInTheCurrentFolder(t *testing.T) {
	e := newImageEnv(t)
	cleanCheck(t)
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o777))
	t.Setenv("SUDO_UID", "4321")
	t.Setenv("SUDO_GID", "4322")
	r := run(t, nil, ExtraRules{}, []string{"sh", "-c", "id -u; pwd; echo made > f; cat /etc/resolv.conf"}, e.opt,
		func(o *Options) { o.Dir = dir })
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	contains(t, r.stdout, "4321\n"+dir+"\n")
	contains(t, r.stdout, "the sandbox's DNS is its router")
	if b, err := os.ReadFile(dir + "/f"); err != nil || string(b) != "made\n" {
		t.Fatalf("file made in the bound folder: %q %v", b, err)
	}
}

func TestImageRunCommandNotFoundExits127(t *testing.T) {
	e := newImageEnv(t)
	cleanCheck(t)
	r := run(t, nil, ExtraRules{}, []string{"no-such-command"}, e.opt)
	if r.err != nil || r.code != 127 {
		t.Fatalf("want 127 as from a shell: %+v", r)
	}
	contains(t, r.stderr, "no-such-command")
}

// TestKilledImageRunIsCollected: a run with --image killed with SIGKILL
// leaves its container, task and snapshot; `trafficpolice sandbox gc`
// removes them with the rest of the run.
func TestKilledImageRunIsCollected(t *testing.T) {
	e := newImageEnv(t)
	before := cleanCheck(t)
	ctx := namespaces.WithNamespace(context.Background(), e.ns)
	running := func(id string) bool {
		c, err := e.client.LoadContainer(ctx, NamespacePrefix+id)
		if err != nil {
			return false
		}
		task, err := c.Task(ctx, nil)
		if err != nil {
			return false
		}
		st, err := task.Status(ctx)
		return err == nil && st.Status == containerd.Running
	}
	k := killRun(t, before, running, "--image", images.BusyboxRef, "--containerd-namespace", e.ns)
	ctr := NamespacePrefix + k.id
	e.mu.Lock()
	e.ids = append(e.ids, ctr)
	e.mu.Unlock()
	if _, err := e.client.LoadContainer(ctx, ctr); err != nil {
		t.Fatalf("the container should outlive the killed CLI until collected: %v", err)
	}
	gc(t, k.id)
	wantCollected(t, k)
	if _, err := e.client.LoadContainer(ctx, ctr); !errdefs.IsNotFound(err) {
		t.Errorf("container %s after gc: %v, want not found", ctr, err)
	}
}
