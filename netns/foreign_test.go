package netns_test

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"

	"github.com/moby/sys/mountinfo"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// TestOtherToolsNamespacesStayTheirs starts from a /run where /run/netns is
// not a mount point (as after a boot) and checks, for each order in which
// trafficpolice and other tools make namespaces there, that ours are made
// and removed without a trace and theirs stay deletable by their owner.
func TestOtherToolsNamespacesStayTheirs(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.RequireCommand(t, "ip", "iproute2")
	scenarios := []struct {
		name string
		fn   func(t *testing.T)
	}{
		// containerd's CRI (or any NewNamed user) made pods' namespaces
		// before trafficpolice first ran: the issue's `make demo` failure.
		{"newnamed-before-us", func(t *testing.T) {
			foreign := foreignNS(t)
			ours := createChecked(t)
			deleteChecked(t, ours)
			deleteForeign(t, foreign)
			if mounted, _ := mountinfo.Mounted(netns.LinkDir); mounted {
				t.Errorf("%s became a mount point: other tools' mounts there could be covered", netns.LinkDir)
			}
		}},
		// iproute2 binds /run/netns onto itself when it is not a mount
		// point: ours, made before, must not be hidden by it.
		{"iproute2-after-us", func(t *testing.T) {
			ours := createChecked(t)
			foreign := ipNetnsAdd(t)
			deleteChecked(t, ours)
			ipNetnsDel(t, foreign)
		}},
		// /run/netns is a shared mount point already (iproute2 made it one)
		// with both kinds of foreign namespaces in it.
		{"mount-point-with-foreign", func(t *testing.T) {
			byIP := ipNetnsAdd(t)
			byNewNamed := foreignNS(t)
			ours := createChecked(t)
			deleteChecked(t, ours)
			deleteForeign(t, byNewNamed)
			ipNetnsDel(t, byIP)
		}},
	}
	for _, prop := range []netnstest.Propagation{netnstest.Private, netnstest.Shared} {
		t.Run(string(prop), func(t *testing.T) {
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					if !netnstest.InFreshRun(t, prop) {
						return
					}
					if mounted, err := mountinfo.Mounted("/run"); err != nil || !mounted {
						t.Fatalf("/run is not the fresh tmpfs (mounted %v, %v)", mounted, err)
					}
					sc.fn(t)
					// What is left in the fresh /run: nothing but the empty folders.
					if left, err := netnstest.NsfsMounts("/run/"); err != nil || len(left) > 0 {
						t.Errorf("namespace mounts left: %v (%v)", left, err)
					}
					for _, dir := range []string{netns.Dir, netns.LinkDir} {
						if entries, _ := os.ReadDir(dir); len(entries) > 0 {
							t.Errorf("%s still holds %d entries: %s…", dir, len(entries), entries[0].Name())
						}
					}
				})
			}
		})
	}
}

// createChecked creates one of our namespaces and checks `ip netns` finds it.
func createChecked(t *testing.T) *netns.Namespace {
	t.Helper()
	n, err := netns.Create("tpt-" + netnstest.Suffix(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Delete() })
	out, err := exec.Command("ip", "netns", "exec", n.Name(), "readlink", "/proc/self/ns/net").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec %s: %v\n%s", n.Name(), err, out)
	}
	if want := "net:[" + strconv.FormatUint(nsInode(t, n.Path()), 10) + "]\n"; string(out) != want {
		t.Errorf("ip netns exec %s ran in %q, want %q", n.Name(), out, want)
	}
	return n
}

// deleteChecked deletes our namespace and checks no name, file or mount
// of it is left.
func deleteChecked(t *testing.T, n *netns.Namespace) {
	t.Helper()
	if err := n.Delete(); err != nil {
		t.Fatalf("delete our namespace: %v", err)
	}
	for _, p := range []string{netns.Dir + "/" + n.Name(), netns.LinkDir + "/" + n.Name()} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left after Delete (lstat: %v)", p, err)
		}
	}
	if m, _ := netnstest.NsfsMounts(n.Name()); len(m) > 0 {
		t.Errorf("mounts of %s left: %v", n.Name(), m)
	}
	if names, _ := netns.List(n.Name()); len(names) > 0 {
		t.Errorf("netns.List(%s) = %v after Delete", n.Name(), names)
	}
}

// foreignNS makes a namespace as vishvananda/netns' NewNamed does.
func foreignNS(t *testing.T) string {
	t.Helper()
	name := "tpt-" + netnstest.Suffix(t) + "-newnamed"
	if err := netnstest.NewForeign(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netnstest.DeleteForeign(name) })
	if names, _ := netns.List(name); !slices.Equal(names, []string{name}) {
		t.Errorf("netns.List(%s) = %v, want the foreign namespace too (as `ip netns list` shows it)", name, names)
	}
	return name
}

// deleteForeign deletes it as its owner would and checks it is gone.
func deleteForeign(t *testing.T, name string) {
	t.Helper()
	if err := netnstest.DeleteForeign(name); err != nil {
		t.Fatal(err)
	}
	if m, _ := netnstest.NsfsMounts(name); len(m) > 0 {
		t.Errorf("foreign namespace %s deleted by its owner, but still mounted: %v", name, m)
	}
}

func ipNetnsAdd(t *testing.T) string {
	t.Helper()
	name := "tpt-" + netnstest.Suffix(t) + "-iproute2"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

func ipNetnsDel(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v\n%s", name, err, out)
	}
	if m, _ := netnstest.NsfsMounts(name); len(m) > 0 {
		t.Errorf("%s deleted with ip netns del, but still mounted: %v", name, m)
	}
}
