package netns_test

import (
	"os"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// newSandbox creates a namespace with SetupSandbox done; the TUN file is
// closed when the test ends.
func newSandbox(t *testing.T, opts netns.SandboxLink) (*netns.Namespace, *os.File) {
	t.Helper()
	netnstest.RequireRoot(t)
	netnstest.RequireCommand(t, "iptables", "iptables")
	netnstest.RequireCommand(t, "ip6tables", "iptables")
	n := netnstest.Namespace(t, "tpt")
	tun, err := netns.SetupSandbox(n, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return n, tun
}
