package k8s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The versions the harness builds. Kubernetes' staging modules
// (k8s.io/api, client-go, …) are published as v0.MINOR.PATCH.
const (
	KubeVersion     = "v1.37.2"
	EtcdVersion     = "v3.6.16"
	CNIVersion      = "v1.10.0"
	RegistryVersion = "v3.1.2"  // github.com/distribution/distribution/v3
	CoreDNSVersion  = "v1.15.0" // github.com/coredns/coredns
)

// registryMain is the registry's main as the harness builds it: the
// registry's command with the filesystem storage driver only, not the
// cloud ones, whose SDKs would make most of its build time.
const registryMain = `package main

import (
	"os"

	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	if err := registry.RootCmd.Execute(); err != nil {
		os.Exit(1)
	}
}
`

// coreDNSPlugins are the only CoreDNS plugins the cluster's DNS is built
// with, in the order they handle a query (CoreDNS's own plugin.cfg
// order): no forward plugin, so no name is sent off the machine.
var coreDNSPlugins = []string{"bind", "ready", "errors", "kubernetes"}

// kubeCommands are the main packages built from k8s.io/kubernetes.
var kubeCommands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// runtimeCommands are built from the second wrapper module: etcd and the
// CNI plugins the cluster's network uses.
var runtimeCommands = map[string]string{
	"etcd":       "go.etcd.io/etcd/server/v3",
	"bridge":     "github.com/containernetworking/plugins/plugins/main/bridge",
	"loopback":   "github.com/containernetworking/plugins/plugins/main/loopback",
	"host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
	"portmap":    "github.com/containernetworking/plugins/plugins/meta/portmap",
}

// CacheDir is where built binaries are kept between runs:
// $TRAFFICPOLICE_CACHE, or /var/cache/trafficpolice.
func CacheDir() string {
	if d := os.Getenv("TRAFFICPOLICE_CACHE"); d != "" {
		return d
	}
	return "/var/cache/trafficpolice"
}

// Binaries are the paths of everything a cluster runs that the harness builds.
type Binaries struct {
	// Kube holds kube-apiserver, kube-controller-manager, kube-scheduler,
	// kubelet, kube-proxy and kubectl.
	Kube string
	// Etcd is the etcd binary.
	Etcd string
	// CNI is the folder of the CNI plugins (bridge, loopback, host-local, portmap).
	CNI string
	// Registry is the distribution project's OCI registry.
	Registry string
	// CoreDNS is CoreDNS with the kubernetes plugin (and coreDNSPlugins only).
	CoreDNS string
}

// Kubectl is the path of kubectl.
func (b Binaries) Kubectl() string { return filepath.Join(b.Kube, "kubectl") }

// Build builds, or finds in the cache, every binary a cluster needs.
// Progress lines go to log. A cold build of Kubernetes takes 13–15
// minutes on two cores; it runs under `nice -n 19` so that it disturbs
// other work on the machine less.
func Build(log io.Writer) (Binaries, error) {
	root := CacheDir()
	kube := filepath.Join(root, "kubernetes-"+KubeVersion)
	rt := filepath.Join(root, "runtime-etcd-"+EtcdVersion+"-cni-"+CNIVersion)
	reg := filepath.Join(root, "registry-"+RegistryVersion)
	dns := filepath.Join(root, "coredns-"+CoreDNSVersion)
	b := Binaries{
		Kube:     filepath.Join(kube, "bin"),
		Etcd:     filepath.Join(rt, "bin", "etcd"),
		CNI:      filepath.Join(rt, "bin", "cni"),
		Registry: filepath.Join(reg, "bin", "registry"),
		CoreDNS:  filepath.Join(dns, "bin", "coredns"),
	}
	if err := buildOnce(log, kube, "Kubernetes "+KubeVersion, buildKube); err != nil {
		return b, err
	}
	if err := buildOnce(log, rt, "etcd "+EtcdVersion+" and CNI plugins "+CNIVersion, buildRuntime); err != nil {
		return b, err
	}
	if err := buildOnce(log, reg, "the distribution registry "+RegistryVersion, buildRegistry); err != nil {
		return b, err
	}
	if err := buildOnce(log, dns, "CoreDNS "+CoreDNSVersion, buildCoreDNS); err != nil {
		return b, err
	}
	return b, nil
}

// buildOnce runs build in dir unless an earlier run completed it; the
// "complete" stamp is written last, so an interrupted build starts over.
func buildOnce(log io.Writer, dir, what string, build func(log io.Writer, dir string) error) error {
	stamp := filepath.Join(dir, "complete")
	if _, err := os.Stat(stamp); err == nil {
		fmt.Fprintf(log, "k8s harness: %s: cached in %s\n", what, dir)
		return nil
	}
	if err := os.RemoveAll(filepath.Join(dir, "bin")); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "src"), 0o755); err != nil {
		return fmt.Errorf("make build dir for %s: %w", what, err)
	}
	fmt.Fprintf(log, "k8s harness: building %s into %s (first run only)\n", what, dir)
	start := time.Now()
	if err := build(log, dir); err != nil {
		return fmt.Errorf("build %s: %w", what, err)
	}
	took := time.Since(start).Round(time.Second)
	fmt.Fprintf(log, "k8s harness: built %s in %s\n", what, took)
	return os.WriteFile(stamp, []byte(fmt.Sprintf("built %s in %s\n", time.Now().UTC().Format(time.RFC3339), took)), 0o644)
}

// buildKube builds Kubernetes from a wrapper module: k8s.io/kubernetes
// replaces its staging modules with ./staging paths, which a dependent
// module cannot use, so the wrapper replaces each with its published
// v0.x tag.
func buildKube(log io.Writer, dir string) error {
	src := filepath.Join(dir, "src")
	out, err := goCmd(src, nil, "mod", "download", "-json", "k8s.io/kubernetes@"+KubeVersion).Output()
	if err != nil {
		return fmt.Errorf("download k8s.io/kubernetes: %w", exitDetail(err))
	}
	var mod struct{ Dir, GoMod string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return fmt.Errorf("read go mod download's answer: %w", err)
	}
	gomod, err := os.ReadFile(filepath.Join(mod.Dir, "go.mod"))
	if err != nil {
		return fmt.Errorf("read k8s.io/kubernetes's go.mod: %w", err)
	}
	staging := stagingModules(gomod)
	if len(staging) == 0 {
		return fmt.Errorf("k8s.io/kubernetes %s's go.mod lists no staging replacements: the wrapper module would not build", KubeVersion)
	}
	minor := "v0." + strings.TrimPrefix(KubeVersion, "v1.")
	var b strings.Builder
	fmt.Fprintf(&b, "module tpk8sbuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", KubeVersion)
	for _, m := range staging {
		fmt.Fprintf(&b, "\t%s => %s %s\n", m, m, minor)
	}
	b.WriteString(")\n")
	var tools strings.Builder
	tools.WriteString("//go:build tools\n\npackage tools\n\nimport (\n")
	for _, c := range kubeCommands {
		fmt.Fprintf(&tools, "\t_ %q\n", "k8s.io/kubernetes/cmd/"+c)
	}
	tools.WriteString(")\n")
	if err := writeModule(src, b.String(), tools.String()); err != nil {
		return err
	}
	if err := run(log, goCmd(src, nil, "mod", "tidy")); err != nil {
		return err
	}
	major, minorNum, _ := strings.Cut(strings.TrimPrefix(KubeVersion, "v"), ".")
	minorNum, _, _ = strings.Cut(minorNum, ".")
	ld := []string{"-s", "-w"}
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		ld = append(ld, "-X", pkg+".gitVersion="+KubeVersion, "-X", pkg+".gitMajor="+major,
			"-X", pkg+".gitMinor="+minorNum, "-X", pkg+".gitTreeState=clean")
	}
	args := []string{"build", "-trimpath", "-ldflags", strings.Join(ld, " "), "-o", filepath.Join(dir, "bin") + "/"}
	for _, c := range kubeCommands {
		args = append(args, "k8s.io/kubernetes/cmd/"+c)
	}
	return run(log, goCmd(src, []string{"CGO_ENABLED=0"}, args...))
}

// buildRuntime builds etcd and the CNI plugins from a second wrapper module.
func buildRuntime(log io.Writer, dir string) error {
	src := filepath.Join(dir, "src")
	var tools strings.Builder
	tools.WriteString("//go:build tools\n\npackage tools\n\nimport (\n")
	for _, name := range sortedKeys(runtimeCommands) {
		fmt.Fprintf(&tools, "\t_ %q\n", runtimeCommands[name])
	}
	tools.WriteString(")\n")
	if err := writeModule(src, "module tprtbuild\n\ngo 1.26.0\n", tools.String()); err != nil {
		return err
	}
	if err := run(log, goCmd(src, nil, "get", "go.etcd.io/etcd/server/v3@"+EtcdVersion,
		"github.com/containernetworking/plugins@"+CNIVersion)); err != nil {
		return err
	}
	if err := run(log, goCmd(src, nil, "mod", "tidy")); err != nil {
		return err
	}
	for _, name := range sortedKeys(runtimeCommands) {
		out := filepath.Join(dir, "bin", "cni", name)
		if name == "etcd" {
			out = filepath.Join(dir, "bin", "etcd")
		}
		if err := run(log, goCmd(src, []string{"CGO_ENABLED=0"}, "build", "-trimpath", "-ldflags", "-s -w", "-o", out, runtimeCommands[name])); err != nil {
			return err
		}
	}
	return nil
}

// buildRegistry builds the distribution project's registry from
// registryMain.
func buildRegistry(log io.Writer, dir string) error {
	return buildMain(log, dir, "tpregbuild", "github.com/distribution/distribution/v3@"+RegistryVersion, registryMain, "registry")
}

// buildCoreDNS builds a CoreDNS with only coreDNSPlugins: a main of its
// own calls coremain as CoreDNS's does, with the plugin list set before
// the server reads it, so that the other plugins' dependencies are
// neither downloaded nor built.
func buildCoreDNS(log io.Writer, dir string) error {
	var b strings.Builder
	b.WriteString("package main\n\nimport (\n\t\"github.com/coredns/coredns/core/dnsserver\"\n\t\"github.com/coredns/coredns/coremain\"\n")
	quoted := make([]string, len(coreDNSPlugins))
	for i, p := range coreDNSPlugins {
		fmt.Fprintf(&b, "\t_ %q\n", "github.com/coredns/coredns/plugin/"+p)
		quoted[i] = strconv.Quote(p)
	}
	fmt.Fprintf(&b, ")\n\nfunc init() { dnsserver.Directives = []string{%s} }\n\nfunc main() { coremain.Run() }\n", strings.Join(quoted, ", "))
	return buildMain(log, dir, "tpdnsbuild", "github.com/coredns/coredns@"+CoreDNSVersion, b.String(), "coredns")
}

// buildMain builds main (a main package's source) in a throwaway module
// that requires moduleAtVersion, statically into dir/bin/out.
func buildMain(log io.Writer, dir, module, moduleAtVersion, main, out string) error {
	src := filepath.Join(dir, "src")
	if err := writeModule(src, "module "+module+"\n\ngo 1.26.0\n", ""); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(main), 0o644); err != nil {
		return fmt.Errorf("write %s's main: %w", out, err)
	}
	// No `go mod tidy`: it would download the test dependencies of every
	// module in the graph; go get selects the same versions, and the
	// build (-mod=mod) records the sums of what it compiles.
	if err := run(log, goCmd(src, nil, "get", moduleAtVersion)); err != nil {
		return err
	}
	return run(log, goCmd(src, []string{"CGO_ENABLED=0"}, "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "bin", out), "."))
}

// stagingModules returns the module paths k8s.io/kubernetes's go.mod
// replaces with ./staging folders.
func stagingModules(gomod []byte) []string {
	var mods []string
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "replace ")
		from, to, ok := strings.Cut(line, "=>")
		if !ok || !strings.HasPrefix(strings.TrimSpace(to), "./staging/") {
			continue
		}
		mods = append(mods, strings.Fields(from)[0])
	}
	return mods
}

func writeModule(src, gomod, tools string) error {
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(gomod), 0o644); err != nil {
		return fmt.Errorf("write wrapper go.mod: %w", err)
	}
	os.Remove(filepath.Join(src, "go.sum"))
	if tools == "" {
		return nil
	}
	if err := os.WriteFile(filepath.Join(src, "tools.go"), []byte(tools), 0o644); err != nil {
		return fmt.Errorf("write wrapper tools.go: %w", err)
	}
	return nil
}

// goCmd runs the go command of this toolchain at lowest priority, outside
// any workspace, in dir.
func goCmd(dir string, env []string, args ...string) *exec.Cmd {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command("nice", append([]string{"-n", "19", goBin}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod"), env...)
	return cmd
}

func run(log io.Writer, cmd *exec.Cmd) error {
	var tail bytes.Buffer
	cmd.Stdout = io.MultiWriter(log, &tail)
	cmd.Stderr = io.MultiWriter(log, &tail)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args[3:], " "), err, lastLines(tail.String(), 20))
	}
	return nil
}

func exitDetail(err error) error {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, lastLines(string(ee.Stderr), 20))
	}
	return err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
