package main

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const releaseVersion = "v0.0.0-reprotest"

// TestReleaseIsReproducibleAndStatic builds the release twice, the second
// time from an environment that would change the output if the Makefile
// let it through, and wants the same SHA256SUMS, sums that match the
// files, and static binaries for each platform.
func TestReleaseIsReproducibleAndStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release twice (minutes on a fresh build cache); runs without -short")
	}
	for _, tool := range []string{"make", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("this test needs %s", tool)
			}
			t.Skipf("this test needs %s", tool)
		}
	}
	first := buildRelease(t, nil)
	second := buildRelease(t, []string{"GOFLAGS=-buildvcs=true", "GOAMD64=v3", "GOARM64=v9.0", "TZ=Asia/Tokyo"})
	if first != second {
		t.Fatalf("two builds of the same commit differ:\n%s\nthen\n%s", first, second)
	}
	t.Logf("both builds:\n%s", first)
}

// buildRelease runs `make release` into a temp dir with extra environment
// and checks what it wrote; it returns SHA256SUMS.
func buildRelease(t *testing.T, env []string) string {
	t.Helper()
	dist := t.TempDir()
	cmd := exec.Command("make", "-C", "../..", "release", "VERSION="+releaseVersion, "DIST="+dist)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]elf.Machine{
		"trafficpolice-" + releaseVersion + "-linux-amd64": elf.EM_X86_64,
		"trafficpolice-" + releaseVersion + "-linux-arm64": elf.EM_AARCH64,
	}
	lines := strings.Split(strings.TrimSpace(string(sums)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("SHA256SUMS has %d lines, want %d:\n%s", len(lines), len(want), sums)
	}
	for _, line := range lines {
		sum, name, ok := strings.Cut(line, "  ")
		machine, known := want[name]
		if !ok || !known {
			t.Fatalf("SHA256SUMS line %q: want \"SUM  trafficpolice-%s-linux-ARCH\"", line, releaseVersion)
		}
		path := filepath.Join(dist, name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s: SHA256SUMS says %s, the file's sum is %x", name, sum, got)
		}
		checkStatic(t, path, machine)
	}
	// The binary for this machine says its version.
	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		out, err := exec.Command(filepath.Join(dist, "trafficpolice-"+releaseVersion+"-linux-amd64"), "version").CombinedOutput()
		if err != nil || string(out) != "trafficpolice "+releaseVersion+"\n" {
			t.Errorf("version: %q, %v; want %q", out, err, "trafficpolice "+releaseVersion+"\n")
		}
	}
	return string(sums)
}

// checkStatic wants an ELF executable for machine with no interpreter and
// no shared libraries.
func checkStatic(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s: machine %s, want %s", filepath.Base(path), f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: has %s: not a static binary", filepath.Base(path), p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s: needs shared libraries %v", filepath.Base(path), libs)
	}
}
