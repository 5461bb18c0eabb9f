package netnstest

import (
	"net"
	"os"
	"strings"

	"github.com/trafficpolice/trafficpolice/netns"
)

// Namespace creates the empty network namespace PREFIX-SUFFIX with package
// netns (mounted under netns.Dir and linked from /run/netns, so `ip netns
// exec NAME` works on it), with every link down, lo included, as `ip netns add` leaves it. It
// stops the test unless it runs as root (see RequireRoot). When the test
// ends, the processes in the namespace are killed and it is deleted; the
// cleanup fails the test if its name or its mount is left.
func Namespace(t TB, prefix string) *netns.Namespace {
	t.Helper()
	RequireRoot(t)
	n, err := netns.Create(prefix + "-" + Suffix(t))
	if err != nil {
		t.Fatalf("test namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.KillProcesses(n); err != nil {
			t.Errorf("test namespace: %v", err)
		}
		if err := n.Delete(); err != nil {
			t.Errorf("test namespace: %v", err)
		}
		if names, _ := netns.List(n.Name()); len(names) != 0 {
			t.Errorf("test namespace %s is left in %s", n.Name(), netns.Dir)
		}
		if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), n.Path()+" ") {
			t.Errorf("the mount of test namespace %s is left", n.Name())
		}
	})
	return n
}

// LoopbackUp brings lo up inside n, for tests whose processes talk over
// the namespace's own loopback.
func LoopbackUp(t TB, n *netns.Namespace) {
	t.Helper()
	h, err := handleIn(n)
	if err != nil {
		t.Fatalf("loopback up in %s: %v", n.Name(), err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up in %s: %v", n.Name(), err)
	}
}

// Listen opens a listener inside n ("tcp", "tcp4" or "tcp6", as for
// net.Listen), closed when the test ends. Connections it accepts belong to
// n whichever goroutine serves them.
func Listen(t TB, n *netns.Namespace, network, address string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s %s in %s: %v", network, address, n.Name(), err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
