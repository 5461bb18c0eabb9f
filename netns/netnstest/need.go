package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
)

// Need stops the test when a requirement is unmet: it fails under CI=true,
// where every requirement must be installed, and skips elsewhere. format
// and args say what is missing and how to get it.
func Need(t TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI=true: unmet requirements fail the test)", msg)
		return
	}
	t.Skipf("%s (skipped outside CI)", msg)
}

// InCI reports whether the tests run in CI (CI=true), where nothing may be
// skipped for want of root or a tool.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireRoot stops the test (see Need) unless it runs as root.
func RequireRoot(t TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "this test needs root (network namespaces, links, mounts); run it as root: sudo -E go test ...")
}

// RequireCommand stops the test (see Need) unless name is on PATH, saying
// which Debian package brings it, and returns the command's path.
func RequireCommand(t TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	Need(t, err == nil, "this test needs %s: apt-get install %s", name, debianPackage)
	return path
}

// Suffix returns 8 random hex characters: the part of a test resource's
// name that keeps parallel tests apart.
func Suffix(t TB) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random suffix: %v", err)
	}
	return hex.EncodeToString(b)
}
