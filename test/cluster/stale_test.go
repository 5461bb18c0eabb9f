package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

func TestStaleClustersOfDeadRunsAreRemoved(t *testing.T) {
	t.Parallel()
	netnstest.RequireRoot(t)

	// A PID that has just exited stands for a crashed test binary.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := dead.Process.Pid

	id, err := randomID()
	if err != nil {
		t.Fatal(err)
	}
	prefix := "tpc-" + id
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s-p%d-", prefix, deadPID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var namespaces []*netns.Namespace
	for _, n := range []string{prefix, prefix + "-a"} {
		ns, err := netns.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		namespaces = append(namespaces, ns)
		t.Cleanup(func() { ns.Delete() })
	}
	// A process left in the pod namespace, as if it had escaped Pdeathsig.
	orphan := exec.Command("sleep", "300")
	if err := namespaces[1].Do(orphan.Start); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { orphan.Wait(); close(exited) }()
	t.Cleanup(func() { orphan.Process.Kill(); <-exited })

	removed, err := sweepStale()
	if err != nil {
		t.Fatalf("sweepStale: %v", err)
	}
	t.Logf("removed %v", removed)
	for _, n := range namespaces {
		if _, err := netns.Open(n.Name()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale namespace %s is still there (open: %v)", n.Name(), err)
		}
		if left, _ := netns.List(n.Name()); slices.Contains(left, n.Name()) {
			t.Errorf("stale namespace %s is still listed", n.Name())
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("stale dir %s is still there", dir)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Errorf("process %d left in a stale namespace was not killed", orphan.Process.Pid)
	}

	// A live owner's cluster is never touched.
	live, err := os.MkdirTemp("", clusterDirPattern("tpc-"+id[:5]+"z"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(live) })
	if _, err := sweepStale(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("sweepStale removed %s, whose owner (this test) is alive", live)
	}
}

// Namespaces of a cluster whose dir is gone (a cleanup that died between
// the two, or a dir removed by hand) are swept too.
func TestSweepRemovesNamespacesWithoutTheirDir(t *testing.T) {
	netnstest.RequireRoot(t)
	id := "zz" + netnstest.Suffix(t)[:4]
	for _, name := range []string{"tpc-" + id, "tpc-" + id + "-dns"} {
		if _, err := netns.Create(name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netns.DeleteNamed(name) })
	}
	removed, err := sweepStale()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tpc-" + id, "tpc-" + id + "-dns"} {
		if !slices.Contains(removed, "netns "+name) {
			t.Errorf("%s not swept (removed: %v)", name, removed)
		}
		if _, err := netns.Open(name); err == nil {
			t.Errorf("%s is still there", name)
		}
	}
}
