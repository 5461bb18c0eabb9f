package sandbox

import (
	"os"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// TestForeignNamespaceOutlivesARun is the first run after a boot on a
// machine where another tool (containerd's CRI, a test harness) made a
// namespace the way vishvananda/netns' NewNamed does: /run/netns is not a
// mount point and holds a file with the namespace bind-mounted on it. A
// real sandbox runs; then the other tool deletes its namespace its own way,
// which must work, and nothing of the sandbox may be left.
func TestForeignNamespaceOutlivesARun(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, prop := range []netnstest.Propagation{netnstest.Private, netnstest.Shared} {
		t.Run(string(prop), func(t *testing.T) {
			if !netnstest.InFreshRun(t, prop) {
				return
			}
			cleanCheck(t)
			foreign := "tpf-" + netnstest.Suffix(t)
			if err := netnstest.NewForeign(foreign); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { netnstest.DeleteForeign(foreign) })

			// The app proves it ran in the sandbox: its namespace has the TUN.
			r := run(t, nil, ExtraRules{}, []string{"sh", "-c", "grep -q tp0: /proc/self/net/dev && exit 7"})
			if r.err != nil || r.code != 7 {
				t.Fatalf("the app did not run in a sandbox (want exit 7): %+v", r)
			}

			if err := netnstest.DeleteForeign(foreign); err != nil {
				t.Fatalf("after a sandbox run: %v", err)
			}
			if left, err := netnstest.NsfsMounts("/run/"); err != nil || len(left) > 0 {
				t.Errorf("namespace mounts left after the run and the foreign delete: %v (%v)", left, err)
			}
			if names, _ := netns.List(""); len(names) > 0 {
				t.Errorf("namespaces left: %v", names)
			}
			if entries, _ := os.ReadDir(StateDir); len(entries) > 0 {
				t.Errorf("%s still holds %s", StateDir, entries[0].Name())
			}
		})
	}
}
