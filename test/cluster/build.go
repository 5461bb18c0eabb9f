package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// builds caches the binaries BuildApp made, when Main owns a directory
// that lives as long as the test binary.
var builds struct {
	mu   sync.Mutex
	dir  string            // set by Main; empty: build per test
	bins map[string]string // package → binary
}

// Main runs a package's tests with a build cache for BuildApp that is
// shared by all its tests and removed at the end. Use it as
//
//	func TestMain(m *testing.M) { cluster.Main(m) }
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", buildDirPattern())
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster.Main: make build dir: %v\n", err)
		os.Exit(2)
	}
	builds.mu.Lock()
	builds.dir, builds.bins = dir, map[string]string{}
	builds.mu.Unlock()
	code := m.Run()
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "cluster.Main: remove build dir: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// BuildApp builds the Go main package pkg with CGO_ENABLED=0 and returns
// the binary's path. pkg is an import path or a path relative to the
// module root ("./test/apps/uwu-app"). Under Main each package is built
// once per test binary; otherwise into t's temp dir.
func BuildApp(t TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.bins[pkg]; ok {
		return bin
	}
	dir := builds.dir
	if dir == "" {
		dir = t.TempDir()
	}
	bin, err := goBuild(pkg, dir)
	if err != nil {
		t.Fatalf("BuildApp: %v", err)
	}
	if builds.bins != nil {
		builds.bins[pkg] = bin
	}
	return bin
}

func goBuild(pkg, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build %s: the go command is not on PATH: %w", pkg, err)
	}
	// A per-package subdirectory keeps same-named packages apart.
	outDir := filepath.Join(dir, strings.NewReplacer("/", "_", ".", "_").Replace(strings.TrimPrefix(pkg, "./")))
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("make %s: %w", outDir, err)
	}
	bin := filepath.Join(outDir, path.Base(pkg))
	cmd := exec.Command(goBin, "build", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// moduleRoot is the nearest directory above the working directory that
// holds go.mod (tests run in their package's directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("look for go.mod in %s: %w", dir, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
