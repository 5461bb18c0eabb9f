package netnstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/sys/mountinfo"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Propagation is how the fresh /run propagates mounts: private as on a
// machine without systemd (this project's CI), shared as under systemd.
type Propagation string

const (
	Private Propagation = "private"
	Shared  Propagation = "shared"
)

// envFreshRun tells the child process which test to run in its fresh
// /run, with which propagation, and the parent's mount namespace.
const envFreshRun = "TRAFFICPOLICE_TEST_FRESH_RUN"

// InFreshRun runs the calling test again in a child process that has a
// mount namespace of its own, with an empty tmpfs on /run: /run/netns
// does not exist, so it is not a mount point, as after a boot. In the
// child it returns true and the test goes on there; in the parent it
// waits for the child, logs its output, fails the test if the child did
// not pass, and returns false: the test must then return.
func InFreshRun(t *testing.T, prop Propagation) bool {
	t.Helper()
	if prop != Private && prop != Shared {
		t.Fatalf("propagation %q is invalid: want %q or %q", prop, Private, Shared)
	}
	hostMnt, err := mountNS()
	if err != nil {
		t.Fatal(err)
	}
	want := t.Name() + "|" + string(prop) + "|"
	if v := os.Getenv(envFreshRun); v != "" {
		if !strings.HasPrefix(v, want) {
			t.Fatalf("%s=%q: this child process was started for another test", envFreshRun, v)
		}
		// Never mount over the real /run: only in a mount namespace that
		// is not the parent's.
		if parent := strings.TrimPrefix(v, want); parent == hostMnt {
			t.Fatalf("still in the parent's mount namespace (%s): refusing to mount over /run", parent)
		}
		// Copies of the host's mounts under /run (its /run/netns and the
		// namespaces there) would still be listed, hidden, under the tmpfs:
		// take them off first, in this mount namespace only.
		if err := detachUnder("/run"); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
			t.Fatalf("mount a fresh tmpfs on /run: %v", err)
		}
		if prop == Shared {
			if err := unix.Mount("", "/run", "none", unix.MS_SHARED, ""); err != nil {
				t.Fatalf("make the fresh /run shared: %v", err)
			}
		}
		return true
	}

	args := []string{"-test.run=" + runPattern(t.Name()), "-test.count=1", "-test.v", "-test.timeout=5m"}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envFreshRun+"="+want+hostMnt)
	// Go makes / private (recursively) in the child after the unshare,
	// so nothing the child mounts reaches the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	t.Logf("in a fresh /run (%s):\n%s", prop, out)
	if err != nil {
		t.Errorf("the test failed in a fresh /run (%s): %v", prop, err)
	} else if !strings.Contains(string(out), "--- PASS: "+t.Name()+" ") {
		t.Errorf("the test did not run in the child process (-test.run=%s)", runPattern(t.Name()))
	}
	return false
}

// detachUnder lazily unmounts dir and every mount under it, each subtree
// once (a detached parent takes its children with it).
func detachUnder(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("list mounts under %s: %w", dir, err)
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) < len(mounts[j].Mountpoint) })
	for _, m := range mounts {
		err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("detach %s in the test's mount namespace: %w", m.Mountpoint, err)
		}
	}
	return nil
}

// runPattern is the -test.run pattern that selects exactly the test name
// (with its subtest levels).
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// mountNS names this process's mount namespace, as mnt:[INODE].
func mountNS() (string, error) {
	s, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return "", fmt.Errorf("read this process's mount namespace: %w", err)
	}
	return s, nil
}

// ForeignDir is where other tools make their named namespaces.
const ForeignDir = "/run/netns"

// NewForeign makes the network namespace ForeignDir/NAME as another tool
// would: with vishvananda/netns' NewNamed, which bind-mounts the new
// namespace onto a file there and never makes the folder a mount point.
// The calling thread is left where it was.
func NewForeign(name string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		h, err := vns.NewNamed(name)
		// NewNamed may have moved the thread even when it failed.
		if serr := vns.Set(orig); serr != nil {
			if err == nil {
				h.Close()
				_ = vns.DeleteNamed(name)
			}
			errc <- fmt.Errorf("return from the new namespace %s: %w", name, serr)
			return // the thread stays locked: Go drops it
		}
		runtime.UnlockOSThread()
		if err != nil {
			errc <- fmt.Errorf("create the foreign namespace %s: %w", name, err)
			return
		}
		h.Close()
		errc <- nil
	}()
	return <-errc
}

// DeleteForeign deletes ForeignDir/NAME as its owner would (NewNamed's
// counterpart, DeleteNamed: unmount the path, remove the file). It fails,
// with "device or resource busy", when the namespace's mount was hidden.
func DeleteForeign(name string) error {
	if err := vns.DeleteNamed(name); err != nil {
		return fmt.Errorf("delete the foreign namespace %s as its owner would: %w", name, err)
	}
	return nil
}

// NsfsMounts lists the mount points of network namespaces (nsfs mounts)
// in this mount namespace whose path contains substr, one per mount (the
// same path twice means one mount hides another).
func NsfsMounts(substr string) ([]string, error) {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("nsfs"))
	if err != nil {
		return nil, fmt.Errorf("list nsfs mounts: %w", err)
	}
	var points []string
	for _, m := range mounts {
		if strings.Contains(m.Mountpoint, substr) {
			points = append(points, m.Mountpoint)
		}
	}
	return points, nil
}
