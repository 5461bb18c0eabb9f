package images

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Default names of the images this package builds. The agent's is the
// repository the project publishes it to, so that a cluster's nodes pull
// it (tagged with the version) as they pull any image; a copy built here
// is pushed there or to a mirror with `trafficpolice images push`.
const (
	AgentRepo   = "ghcr.io/trafficpolice/agent"
	BusyboxRef  = "localhost/trafficpolice/busybox:1"
	AgentBinary = "/usr/local/bin/trafficpolice"
)

// defaultPath is the PATH images get.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// staticArch checks that binary is a statically linked Linux ELF program
// (an image of one file has no shared libraries to offer) and returns its
// architecture in Go's words.
func staticArch(binary string) (string, error) {
	f, err := elf.Open(binary)
	if err != nil {
		return "", fmt.Errorf("binary %s is not a Linux program: %w", binary, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("binary %s is dynamically linked: the image holds it alone, so build it static (CGO_ENABLED=0 go build)", binary)
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_386:
		return "386", nil
	case elf.EM_ARM:
		return "arm", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	case elf.EM_PPC64:
		return "ppc64le", nil
	case elf.EM_S390:
		return "s390x", nil
	}
	return "", fmt.Errorf("binary %s is for machine %v, which has no OCI architecture name here", binary, f.Machine)
}

// baseFiles are what every image of ours has besides its program: the
// mount points for the sandbox's resolver files, a writable /tmp, and user
// entries for root and nobody (the app may run as any numeric user).
func baseFiles() []File {
	return []File{
		{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "etc/hosts", Mode: 0o644, Data: []byte("127.0.0.1\tlocalhost\n::1\tlocalhost\n")},
		{Path: "etc/resolv.conf", Mode: 0o644, Data: nil},
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "root", Mode: fs.ModeDir | 0o700},
	}
}

// Agent is the agent's image: the static trafficpolice binary alone, with
// `trafficpolice agent` as its entrypoint (arguments follow, e.g.
// --listen 0.0.0.0:7777). It runs as root: stealing traffic takes
// NET_ADMIN inside the target's network namespace.
func Agent(binary, ref string) (Recipe, error) {
	arch, err := staticArch(binary)
	if err != nil {
		return Recipe{}, err
	}
	files := append(baseFiles(), File{Path: AgentBinary, Mode: 0o755, Source: binary})
	return Recipe{
		Ref:   ref,
		Files: files,
		Arch:  arch,
		Config: v1.Config{
			Entrypoint: []string{AgentBinary, "agent"},
			Env:        []string{defaultPath},
			WorkingDir: "/",
			Labels:     map[string]string{"org.opencontainers.image.title": "trafficpolice agent"},
		},
		CreatedBy: "trafficpolice images build agent",
	}, nil
}

// AgentArchs are the architectures the agent image is built for: the
// nodes of most clusters are one of these.
var AgentArchs = []string{"amd64", "arm64"}

// AgentIndex is the agent's image for several platforms under one name:
// one static trafficpolice binary per architecture (each binary's own, read
// from its ELF header), listed in the order of binaries.
func AgentIndex(binaries []string, ref string) (IndexRecipe, error) {
	if len(binaries) == 0 {
		return IndexRecipe{}, fmt.Errorf("no agent binaries: want a static trafficpolice binary per platform (%s)", strings.Join(AgentArchs, ", "))
	}
	ir := IndexRecipe{Ref: ref}
	byArch := map[string]string{}
	for _, bin := range binaries {
		r, err := Agent(bin, ref)
		if err != nil {
			return IndexRecipe{}, err
		}
		if other, dup := byArch[r.Arch]; dup {
			return IndexRecipe{}, fmt.Errorf("binaries %s and %s are both for linux/%s: want one per platform", other, bin, r.Arch)
		}
		byArch[r.Arch] = bin
		ir.Images = append(ir.Images, r)
	}
	return ir, nil
}

// Busybox is a small shell image from a static busybox (Debian's
// busybox-static: /bin/busybox): the binary and a symlink per applet, as
// `busybox --list-full` names them.
func Busybox(binary, ref string) (Recipe, error) {
	arch, err := staticArch(binary)
	if err != nil {
		return Recipe{}, err
	}
	out, err := exec.Command(binary, "--list-full").Output()
	if err != nil {
		return Recipe{}, fmt.Errorf("list the applets of %s: %w", binary, err)
	}
	files := append(baseFiles(), File{Path: "bin/busybox", Mode: 0o755, Source: binary})
	seen := map[string]bool{"bin/busybox": true}
	for _, applet := range strings.Fields(string(bytes.TrimSpace(out))) {
		if seen[applet] || strings.Contains(applet, "..") {
			continue
		}
		seen[applet] = true
		files = append(files, File{Path: applet, Mode: fs.ModeSymlink | 0o777, Link: "/bin/busybox"})
	}
	return Recipe{
		Ref:   ref,
		Files: files,
		Arch:  arch,
		Config: v1.Config{
			Cmd:        []string{"/bin/sh"},
			Env:        []string{defaultPath},
			WorkingDir: "/",
		},
		CreatedBy: "trafficpolice images build busybox",
	}, nil
}

// Dir packs a whole root folder (say, one made by debootstrap) as an image
// whose command is cmd (a shell when empty). Owners, modes, hard links and
// file capabilities are kept; the contents of dev, proc and sys are left
// out, since the runtime mounts its own.
func Dir(root, ref string, cmd []string) (Recipe, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return Recipe{}, fmt.Errorf("root folder: %w", err)
	}
	if !fi.IsDir() {
		return Recipe{}, fmt.Errorf("root folder %s is not a folder", root)
	}
	if len(cmd) == 0 {
		cmd = []string{"/bin/sh"}
	}
	return Recipe{
		Ref:  ref,
		Root: root,
		Config: v1.Config{
			Cmd:        cmd,
			Env:        []string{defaultPath, "LANG=C.UTF-8"},
			WorkingDir: "/",
		},
		CreatedBy: "trafficpolice images build dir",
	}, nil
}
