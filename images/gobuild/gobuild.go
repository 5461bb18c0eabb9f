// Package gobuild cross-compiles the trafficpolice binary from a checkout
// of its module, static and reproducible, as `make release` does: the
// agent image holds one such binary per platform.
//
// It runs the go command and writes only the binaries it is asked for.
package gobuild

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is the module path of trafficpolice, whose checkout is built.
const Module = "github.com/trafficpolice/trafficpolice"

// mainPackage is the CLI's package, relative to the module's root.
const mainPackage = "./cmd/trafficpolice"

// FindModule returns the root of the trafficpolice checkout that holds
// dir (dir itself or a parent with trafficpolice's go.mod).
func FindModule(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := abs; ; d = filepath.Dir(d) {
		mod, err := modulePath(filepath.Join(d, "go.mod"))
		if err == nil && mod == Module {
			return d, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%s is not in a checkout of %s (no go.mod of that module in it or above it)", abs, Module)
		}
	}
}

// modulePath reads the module line of a go.mod file.
func modulePath(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`), nil
		}
	}
	return "", sc.Err()
}

// Static builds trafficpolice for linux/arch from the checkout at root
// into out, with version as its version. Every setting that changes the
// output is fixed here rather than taken from the caller's environment
// (as the Makefile's release target does), so that the same commit and Go
// version give the same bytes.
func Static(ctx context.Context, root, arch, version, out string) error {
	if version == "" {
		return errors.New("static build: version is empty")
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X main.version="+version, "-o", out, mainPackage)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch,
		"GOAMD64=v1", "GOARM64=v8.0", "GOEXPERIMENT=", "GOFLAGS=-mod=readonly")
	if b, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("build trafficpolice for linux/%s: the go command is not on PATH: install Go (https://go.dev/dl) or give the binaries with --binary", arch)
		}
		return fmt.Errorf("build trafficpolice for linux/%s in %s: %w\n%s", arch, root, err, strings.TrimSpace(string(b)))
	}
	return nil
}
