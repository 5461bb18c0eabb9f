package netns

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"testing"
)

// needRoot stops a test that needs root: it fails under CI=true and skips
// elsewhere.
func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	miss := ""
	if os.Geteuid() != 0 {
		miss = "root"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil && miss == "" {
			miss = tool + " (apt-get install -y iptables iproute2)"
		}
	}
	if miss == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this test needs %s", miss)
	}
	t.Skipf("this test needs %s", miss)
}

func testName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "tpt-" + hex.EncodeToString(b)
}

// newTestNS creates a namespace that is removed, with its processes, when
// the test ends.
func newTestNS(t *testing.T) *Namespace {
	t.Helper()
	n, err := Create(testName(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := KillProcesses(n); err != nil {
			t.Error(err)
		}
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
		if names, _ := List(n.Name()); len(names) != 0 {
			t.Errorf("netns %s left behind", n.Name())
		}
	})
	return n
}

// newSandbox creates a namespace with SetupSandbox done; the TUN file is
// closed when the test ends.
func newSandbox(t *testing.T, opts SandboxLink) (*Namespace, *os.File) {
	t.Helper()
	needRoot(t, "iptables", "ip6tables")
	n := newTestNS(t)
	tun, err := SetupSandbox(n, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return n, tun
}
