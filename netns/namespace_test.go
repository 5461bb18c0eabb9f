package netns_test

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestCreateOpenListDelete(t *testing.T) {
	netnstest.RequireRoot(t)
	name := "tpt-" + netnstest.Suffix(t)
	n, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Delete() })
	if n.Name() != name || n.Path() != netns.Dir+"/"+name {
		t.Errorf("Name, Path = %q, %q", n.Name(), n.Path())
	}
	if target, err := os.Readlink(netns.LinkDir + "/" + name); err != nil || target != n.Path() {
		t.Errorf("%s/%s links to %q (%v), want %s, for `ip netns`", netns.LinkDir, name, target, err, n.Path())
	}
	if _, err := netns.Create(name); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second Create(%q): err = %v, want 'already exists'", name, err)
	}
	o, err := netns.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if nsInode(t, o.Path()) == nsInode(t, "/proc/self/ns/net") {
		t.Error("the new namespace is the host's")
	}
	names, err := netns.List("tpt-")
	if err != nil || !slices.Contains(names, name) {
		t.Errorf("List(tpt-) = %v, %v; want it to contain %s", names, err, name)
	}
	if names, _ := netns.List(name + "x"); len(names) != 0 {
		t.Errorf("List(%sx) = %v, want none", name, names)
	}
	if err := n.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := n.Delete(); err != nil {
		t.Errorf("second Delete: %v, want nil (idempotent)", err)
	}
	if names, _ := netns.List(name); len(names) != 0 {
		t.Errorf("after Delete, List = %v", names)
	}
	if _, err := netns.Open(name); err == nil {
		t.Error("Open after Delete succeeded")
	}
	if _, err := os.Lstat(netns.LinkDir + "/" + name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s/%s left after Delete (lstat: %v)", netns.LinkDir, name, err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), name) {
		t.Errorf("mount of %s left in /proc/self/mountinfo", name)
	}
}

func TestOpenRejectsPlainFile(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.Namespace(t, "tpt") // makes sure Dir exists
	stale := "tpt-" + netnstest.Suffix(t)
	if err := os.WriteFile(netns.Dir+"/"+stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(netns.Dir + "/" + stale) })
	if _, err := netns.Open(stale); err == nil || !strings.Contains(err.Error(), "not a mounted namespace") {
		t.Errorf("Open(stale file) err = %v", err)
	}
}

func TestBadNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", "x\x00"} {
		if _, err := netns.Create(name); err == nil || !strings.Contains(err.Error(), "invalid") {
			t.Errorf("Create(%q) err = %v, want invalid", name, err)
		}
		if _, err := netns.Open(name); err == nil {
			t.Errorf("Open(%q) succeeded", name)
		}
	}
}

func TestDoEntersAndRestores(t *testing.T) {
	netnstest.RequireRoot(t)
	n := netnstest.Namespace(t, "tpt")
	host := nsInode(t, "/proc/self/ns/net")
	want := nsInode(t, n.Path())
	var inside uint64
	if err := n.Do(func() error {
		inside = nsInode(t, "/proc/thread-self/ns/net")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside != want {
		t.Errorf("inside Do the thread's netns inode = %d, want %d", inside, want)
	}
	if got := nsInode(t, "/proc/self/ns/net"); got != host {
		t.Errorf("process netns changed: %d, want %d", got, host)
	}
	sentinel := errors.New("sentinel")
	if err := n.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do's error = %v, want the function's", err)
	}
	// Many calls, so that a thread left in the namespace would be reused
	// and noticed.
	for range 50 {
		if err := n.Do(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		if got := nsInode(t, "/proc/thread-self/ns/net"); got != host {
			t.Fatalf("a thread came back from Do in netns %d", got)
		}
	}
}

func TestProcessesAndKill(t *testing.T) {
	netnstest.RequireRoot(t)
	n := netnstest.Namespace(t, "tpt")
	var cmd *exec.Cmd
	if err := n.Do(func() error {
		// exec from the locked thread: the child inherits the namespace.
		cmd = exec.Command("sleep", "1000")
		return cmd.Start()
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	pids, err := netns.Processes(n)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Errorf("Processes = %v, want [%d]", pids, cmd.Process.Pid)
	}
	if err := netns.KillProcesses(n); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("sleep ended with %v, want killed", err)
	}
	if pids, _ := netns.Processes(n); len(pids) != 0 {
		t.Errorf("after KillProcesses: %v", pids)
	}
}
