package cluster

import (
	"fmt"
	"os"
	"os/exec"
)

// Need stops the test when a requirement is unmet: it fails in CI
// (CI=true), where every requirement must be installed, and skips
// elsewhere, so a developer without root still runs the other tests.
func Need(t TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: unmet requirements fail the test)", msg)
	}
	t.Skipf("%s (skipped outside CI)", msg)
}

// RequireRoot stops the test (see Need) unless it runs as root.
func RequireRoot(t TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "this test needs root to create network namespaces; run it as root (sudo -E go test ...)")
}

// RequireCommand stops the test (see Need) unless name is on PATH, and
// says which Debian package brings it.
func RequireCommand(t TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	Need(t, err == nil, "this test needs %s: apt-get install %s", name, debianPackage)
	return path
}
