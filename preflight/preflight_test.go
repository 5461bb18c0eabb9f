package preflight

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/agent/kube"
	"github.com/trafficpolice/trafficpolice/kernelpath"
)

// needRoot stops a test that needs root: it fails in CI, skips elsewhere.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (CI=true: unmet requirements fail)")
	}
	t.Skip("this test needs root")
}

func want(t *testing.T, r Result, status Status, detail, fix string) {
	t.Helper()
	if r.Status != status || !strings.Contains(r.Detail, detail) || !strings.Contains(r.Fix, fix) {
		t.Errorf("%s = %s %q (fix %q); want %s with %q, fix mentioning %q", r.Check, r.Status, r.Detail, r.Fix, status, detail, fix)
	}
}

func TestPrivileges(t *testing.T) {
	want(t, checkPrivileges(Env{Euid: 1000}), Fail, "uid 1000, not root", "sudo")
	want(t, checkPrivileges(Env{Euid: 0}), OK, "root", "")
}

func TestTUN(t *testing.T) {
	want(t, checkTUN(Env{TUNPath: filepath.Join(t.TempDir(), "tun")}), Fail, "does not exist", "modprobe tun")
	needRoot(t)
	want(t, checkTUN(Env{}.withDefaults()), OK, "/dev/net/tun opens", "")
}

func TestNetns(t *testing.T) {
	needRoot(t)
	want(t, checkNetns(Env{}), OK, "can be created", "")
}

func TestNAT(t *testing.T) {
	want(t, checkNAT(Env{IPTables: "/nonexistent/iptables"}), Fail, "not installed", "apt-get install iptables")
	broken := filepath.Join(t.TempDir(), "iptables")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'iptables v1.8.9 (nf_tables): table nat does not exist' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	want(t, checkNAT(Env{IPTables: broken}), Fail, "table nat does not exist", "kernel has nat")
	needRoot(t)
	want(t, checkNAT(Env{}.withDefaults()), OK, "works with the nat table", "")
}

func TestStateDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	want(t, checkStateDir(Env{StateDir: filepath.Join(file, "state")}), Fail, "cannot create", "sudo")
	dir := filepath.Join(t.TempDir(), "run", "trafficpolice")
	want(t, checkStateDir(Env{StateDir: dir}), OK, "is writable", "")
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the check left %v in the state folder", left)
	}
}

func TestContainerd(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "containerd.sock")
	want(t, checkContainerd(context.Background(), Env{Image: "x", ContainerdAddress: missing}), Fail, "does not answer", "start containerd")
	ln, err := net.Listen("unix", missing)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want(t, checkContainerd(context.Background(), Env{Image: "x", ContainerdAddress: missing}), OK, "answers at", "")
}

func TestKubeconfigAndCluster(t *testing.T) {
	rs := checkCluster(context.Background(), Env{Kube: &kube.AccessOptions{Kubeconfig: filepath.Join(t.TempDir(), "missing")}})
	if len(rs) != 1 {
		t.Fatalf("a missing kubeconfig: %v; want one failed check", rs)
	}
	want(t, rs[0], Fail, "missing", "--kubeconfig")

	// A kubeconfig whose server does not answer (a closed loopback port).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	kc := filepath.Join(t.TempDir(), "config")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://%s", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: dev, context: {cluster: c, user: u, namespace: shop}}]
current-context: dev
`, addr)
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	rs = checkCluster(context.Background(), Env{Kube: &kube.AccessOptions{Kubeconfig: kc}})
	if len(rs) != 2 {
		t.Fatalf("an unreachable cluster: %v; want kubeconfig ok, cluster failed", rs)
	}
	want(t, rs[0], OK, `context "dev" at https://`+addr+", namespace shop, from "+kc, "")
	want(t, rs[1], Fail, "does not answer", "kubectl version")
}

func TestNeededPermissions(t *testing.T) {
	var got []string
	for _, p := range needed(ClusterNeeds{TargetKind: "deployment", Env: true}, "shop") {
		s := p.String()
		if p.optional {
			s += " (optional)"
		}
		got = append(got, s)
	}
	wantList := []string{
		"get pods in namespace shop",
		"list pods in namespace shop",
		"get deployments.apps in namespace shop",
		"create jobs.batch in namespace shop",
		"delete jobs.batch in namespace shop",
		"get jobs.batch in namespace shop",
		"list pods in namespace shop",
		"create secrets in namespace shop",
		"get secrets in namespace shop",
		"update secrets in namespace shop",
		"delete secrets in namespace shop",
		"create pods/portforward in namespace shop",
		"get configmaps in namespace shop (optional)",
	}
	if strings.Join(got, "\n") != strings.Join(wantList, "\n") {
		t.Errorf("permissions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantList, "\n"))
	}
	var eph []string
	for _, p := range needed(ClusterNeeds{TargetKind: "pod", Ephemeral: true, AgentNamespace: "tools"}, "shop") {
		eph = append(eph, p.String())
	}
	// The port-forward goes to the target pod, whatever agent.namespace says.
	if w := "update pods/ephemeralcontainers in namespace shop,create secrets in namespace shop,get secrets in namespace shop,update secrets in namespace shop,delete secrets in namespace shop,create pods/portforward in namespace shop"; !strings.Contains(strings.Join(eph, ","), w) {
		t.Errorf("ephemeral permissions: %v; want %s", eph, w)
	}
}

// TestAsAnOrdinaryUser runs the host checks in a child process as an
// unprivileged user, on a TUN device node only root may open: each check
// that needs root fails, with its fix.
func TestAsAnOrdinaryUser(t *testing.T) {
	if os.Getenv("PREFLIGHT_CHILD") != "" {
		rs := Run(context.Background(), Env{Euid: -1, TUNPath: os.Getenv("PREFLIGHT_TUN"), StateDir: os.Getenv("PREFLIGHT_STATE")})
		_ = json.NewEncoder(os.Stdout).Encode(rs)
		return
	}
	needRoot(t)
	// t.TempDir's parent is private to root: the child must reach this one.
	dir, err := os.MkdirTemp("", "preflight-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tun := filepath.Join(dir, "tun")
	if err := unix.Mknod(tun, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 200))); err != nil {
		t.Fatalf("make a TUN device node: %v", err)
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test binary sits in a folder only root may enter: run a copy.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "preflight.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestAsAnOrdinaryUser$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PREFLIGHT_CHILD=1", "PREFLIGHT_TUN="+tun, "PREFLIGHT_STATE="+state)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child as uid 65534: %v\n%s", err, out)
	}
	var rs []Result
	line, _, _ := strings.Cut(string(out), "\n")
	if err := json.Unmarshal([]byte(line), &rs); err != nil {
		t.Fatalf("child's output %q: %v", out, err)
	}
	byName := map[string]Result{}
	for _, r := range rs {
		byName[r.Check] = r
	}
	want(t, byName["privileges"], Fail, "uid 65534", "sudo")
	want(t, byName["tun"], Fail, "cannot be opened", "chmod 0666")
	want(t, byName["netns"], Fail, "cannot create a network namespace", "sudo")
	want(t, byName["nat"], Fail, "", "")
	want(t, byName["state"], Fail, "cannot write in "+state, "sudo")
	if !Failed(rs) || FirstFailure(rs) == nil || !strings.Contains(FirstFailure(rs).Error(), "preflight privileges") {
		t.Errorf("FirstFailure = %v; want the privileges check", FirstFailure(rs))
	}
}

// procSys is a /proc/sys of the test's making with the given values.
func procSys(t *testing.T, values map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for k, v := range values {
		p := filepath.Join(dir, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestUsernsSaysWhyNot(t *testing.T) {
	env := func(values map[string]string) Env {
		return Env{Euid: 1000, Rootless: true, SkipUsernsProbe: true, ProcSys: procSys(t, values)}.withDefaults()
	}
	want(t, checkUserns(env(map[string]string{sysctlMaxUserNS: "0"})), Fail, "user.max_user_namespaces = 0", "sysctl -w user.max_user_namespaces")
	want(t, checkUserns(env(map[string]string{sysctlMaxUserNS: "100", sysctlDebianUsernsClone: "0"})), Fail,
		"kernel.unprivileged_userns_clone = 0", "sysctl -w kernel.unprivileged_userns_clone=1")
	want(t, checkUserns(env(map[string]string{sysctlAppArmorUserns: "1"})), Fail,
		"apparmor_restrict_unprivileged_userns = 1", "trafficpolice doctor --apparmor-profile | sudo tee /etc/apparmor.d/trafficpolice")
	want(t, checkUserns(env(map[string]string{sysctlMaxUserNS: "100", sysctlDebianUsernsClone: "1", sysctlAppArmorUserns: "0"})), OK, "allowed", "")
	// The privileges check does not ask for root in a rootless run.
	want(t, checkPrivileges(Env{Euid: 1000, Rootless: true}), OK, "rootless", "")
}

func TestUsernsProbeCreatesThem(t *testing.T) {
	needRoot(t)
	want(t, checkUserns(Env{Euid: 0, Rootless: true}.withDefaults()), OK, "can be created", "")
	want(t, checkUserns(Env{Euid: 0, Rootless: true, IPTables: "/nonexistent/iptables"}.withDefaults()), Fail, "not installed", "")
}

func TestRootlessImageIsRefusedBeforeTheCluster(t *testing.T) {
	rs := Run(context.Background(), Env{Euid: 1000, Rootless: true, SkipUsernsProbe: true, StateDir: t.TempDir(), Image: "localhost/x:1"})
	var found bool
	for _, r := range rs {
		if r.Check == "containerd" {
			found = true
			want(t, r, Fail, "--image needs root", "sudo")
		}
	}
	if !found {
		t.Errorf("no containerd check in %v", rs)
	}
}

// TestRunKeepsItsOrder: the checks run at the same time, but their results
// come in the fixed order, whatever each found, and the first failure is
// the first in that order.
func TestRunKeepsItsOrder(t *testing.T) {
	needRoot(t)
	env := Env{Euid: -1, StateDir: t.TempDir(), TUNPath: filepath.Join(t.TempDir(), "no-tun"),
		Image: "x", ContainerdAddress: filepath.Join(t.TempDir(), "containerd.sock"),
		Kube: &kube.AccessOptions{Kubeconfig: filepath.Join(t.TempDir(), "missing")}, AgentImage: "localhost/agent:1"}
	for range 5 {
		rs := Run(context.Background(), env)
		var got []string
		for _, r := range rs {
			got = append(got, r.Check)
		}
		if order := "privileges tun netns nat state containerd kubeconfig agent image"; strings.Join(got, " ") != order {
			t.Fatalf("checks in order %q; want %q", strings.Join(got, " "), order)
		}
		want(t, rs[1], Fail, "does not exist", "modprobe tun")
		want(t, rs[5], Fail, "does not answer", "start containerd")
		want(t, rs[6], Fail, "missing", "--kubeconfig")
		var pe *Error
		if err := FirstFailure(rs); !errors.As(err, &pe) || pe.Result.Check != "tun" {
			t.Fatalf("first failure = %v; want the tun check's", err)
		}
	}
}

// On this kernel (and CI's) the queue and its rules work; a kernel without
// them gets a warning naming what it lacks.
func TestKernelSocketsCheckBindsTheQueueAndAddsTheRules(t *testing.T) {
	needRoot(t)
	want(t, checkKernelSockets(Env{}), OK, "taken as kernel sockets", "")
}

func TestKernelPathFollowsTheDefaultRoutesForwarding(t *testing.T) {
	dev, forwards, err := kernelpath.DefaultRoute()
	if err != nil {
		t.Fatal(err)
	}
	r := checkKernelPath(Env{})
	switch {
	case dev == "":
		want(t, r, OK, "no IPv4 default route", "")
	case forwards:
		want(t, r, OK, "forwards on "+dev, "")
	default:
		want(t, r, Warn, "does not forward on "+dev, "net.ipv4.conf."+dev+".forwarding=1")
	}
	order := func(env Env) string {
		var got []string
		for _, r := range Run(context.Background(), env) {
			got = append(got, r.Check)
		}
		return strings.Join(got, " ")
	}
	if got := order(Env{KernelPath: true}); !strings.Contains(got, "nat kernel path kernel sockets state") {
		t.Errorf("doctor's checks %q leave out the kernel path or kernel sockets", got)
	}
	if got := order(Env{}); strings.Contains(got, "kernel") {
		t.Errorf("a run's checks %q include the kernel path or kernel sockets: they would warn on every run", got)
	}
}
