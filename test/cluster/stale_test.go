package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

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
	var names []string
	for _, n := range []string{prefix, prefix + "-a"} {
		h, err := newNamedNetns(n)
		if err != nil {
			t.Fatal(err)
		}
		h.Close()
		names = append(names, n)
		t.Cleanup(func() {
			if _, err := os.Stat(netnsPath(n)); err == nil {
				deleteNamedNetns(n)
			}
		})
	}
	// A process left in the pod namespace, as if it had escaped Pdeathsig.
	orphan := exec.Command("sleep", "300")
	if err := onThreadIn(netnsPath(prefix+"-a"), orphan.Start); err != nil {
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
	for _, n := range names {
		if _, err := os.Stat(netnsPath(n)); !os.IsNotExist(err) {
			t.Errorf("stale namespace %s is still there (stat: %v)", n, err)
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
