package preflight

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/agent/kube"
	"github.com/trafficpolice/trafficpolice/kernelpath"
	"github.com/trafficpolice/trafficpolice/netns/synqueue"
)

// Env says what to check, and where; tests point it at states of their
// own making.
type Env struct {
	// Euid is the effective user id the run has; -1 means this process's.
	Euid int
	// Rootless says the run puts its sandbox in a user namespace of its
	// own (what a user who is not root gets): the userns check replaces
	// the root-only ones.
	Rootless bool
	// ProcSys is /proc/sys; "" means that.
	ProcSys string
	// SkipUsernsProbe leaves out the attempt to create a user namespace
	// (tests of the sysctl checks).
	SkipUsernsProbe bool
	// TUNPath is the TUN clone device; "" means /dev/net/tun.
	TUNPath string
	// StateDir is where runs keep their records (sandbox.StateDir).
	StateDir string
	// IPTables is the iptables command; "" means "iptables" on PATH.
	IPTables string
	// KernelPath asks whether the host lets a root run's local flows take
	// the kernel path (doctor asks; a run sets it up or goes without, and
	// does not warn each time).
	KernelPath bool
	// Image, when set, needs containerd at ContainerdAddress.
	Image, ContainerdAddress string
	// Kube, when set, is the cluster the run works on.
	Kube *kube.AccessOptions
	// AgentImage, with Kube, is the agent image the run will start.
	AgentImage string
	// InsecureRegistry allows plain HTTP to AgentImage's registry (tests).
	InsecureRegistry bool
	// Cluster says what the run will ask of the cluster.
	Cluster ClusterNeeds
}

func (e Env) withDefaults() Env {
	if e.Euid < 0 {
		e.Euid = os.Geteuid()
	}
	if e.ProcSys == "" {
		e.ProcSys = "/proc/sys"
	}
	if e.TUNPath == "" {
		e.TUNPath = "/dev/net/tun"
	}
	if e.IPTables == "" {
		e.IPTables = "iptables"
	}
	if e.ContainerdAddress == "" {
		e.ContainerdAddress = "/run/containerd/containerd.sock"
	}
	return e
}

func checkPrivileges(env Env) Result {
	r := Result{Check: "privileges"}
	if env.Rootless {
		r.Status, r.Detail = OK, fmt.Sprintf("rootless: the sandbox runs in a user namespace of uid %d's own", env.Euid)
		return r
	}
	if env.Euid == 0 {
		r.Status, r.Detail = OK, "running as root"
		if u := os.Getenv("SUDO_USER"); u != "" {
			r.Detail += " (sudo from " + u + ": the app runs as " + u + ")"
		}
		return r
	}
	r.Status, r.Detail = Fail, fmt.Sprintf("running as uid %d, not root", env.Euid)
	r.Fix = "run with sudo (trafficpolice creates a network namespace, a TUN device and nat rules for the app)"
	return r
}

func checkTUN(env Env) Result {
	r := Result{Check: "tun"}
	f, err := os.OpenFile(env.TUNPath, os.O_RDWR, 0)
	switch {
	case err == nil:
		_ = f.Close()
		r.Status, r.Detail = OK, env.TUNPath+" opens"
	case errors.Is(err, os.ErrNotExist):
		r.Status, r.Detail = Fail, env.TUNPath+" does not exist"
		r.Fix = "load the tun module (modprobe tun), or in a container pass the device (--device /dev/net/tun)"
	case errors.Is(err, os.ErrPermission):
		r.Status, r.Detail = Fail, fmt.Sprintf("%s cannot be opened: %v", env.TUNPath, err)
		r.Fix = "run with sudo, or make the device usable by everyone (sudo chmod 0666 " + env.TUNPath + ", as Debian and Ubuntu ship it; a udev rule keeps it: KERNEL==\"tun\", MODE=\"0666\")"
	default:
		r.Status, r.Detail = Fail, fmt.Sprintf("%s: %v", env.TUNPath, err)
		r.Fix = "check that the kernel has TUN support (CONFIG_TUN)"
	}
	return r
}

// inNewNetns runs fn in a new network namespace on a thread of its own,
// which ends with fn (the namespace, and whatever fn made in it, with it).
func inNewNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("cannot create a network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func checkNetns(env Env) Result {
	r := Result{Check: "netns"}
	if err := inNewNetns(func() error { return nil }); err != nil {
		r.Status, r.Detail = Fail, err.Error()
		r.Fix = "run with sudo; in a container, give it CAP_SYS_ADMIN and CAP_NET_ADMIN"
		return r
	}
	r.Status, r.Detail = OK, "network namespaces can be created"
	return r
}

func checkNAT(env Env) Result {
	r := Result{Check: "nat"}
	path, err := exec.LookPath(env.IPTables)
	if err != nil {
		r.Status, r.Detail = Fail, env.IPTables+" is not installed"
		r.Fix = "apt-get install iptables (the sandbox sends the app's loopback traffic to the router with a nat rule)"
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-w", "-t", "nat", "-S").CombinedOutput()
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("%s cannot read the nat table: %v: %s", path, err, strings.TrimSpace(string(out)))
		r.Fix = "run with sudo, and check that the kernel has nat (nf_tables nat, or iptable_nat)"
		return r
	}
	r.Status, r.Detail = OK, path+" works with the nat table"
	return r
}

// checkKernelPath says whether flows the rules send local can skip the
// router: the kernel path needs the host to forward replies that come in
// by the default route's interface.
func checkKernelPath(env Env) Result {
	r := Result{Check: "kernel path"}
	dev, forwards, err := kernelpath.DefaultRoute()
	switch {
	case err != nil:
		r.Status, r.Detail = Warn, fmt.Sprintf("cannot read the host's routes: %v", err)
	case dev == "":
		r.Status, r.Detail = OK, "the host has no IPv4 default route; local flows to the networks it forwards to go through the kernel"
	case !forwards:
		r.Status, r.Detail = Warn, fmt.Sprintf("the host does not forward on %s (its default route): local flows through it go through trafficpolice's router instead of the kernel (slower: README, Benchmarks)", dev)
		r.Fix = fmt.Sprintf("sudo sysctl -w net.ipv4.conf.%s.forwarding=1 (or net.ipv4.ip_forward=1, as Docker, Kubernetes and libvirt hosts have it); or nothing: every run still works", dev)
	default:
		r.Status, r.Detail = OK, fmt.Sprintf("the host forwards on %s: flows the rules send local by address or port go through the kernel", dev)
	}
	return r
}

// checkKernelSockets says whether a root run can take the app's TCP
// connections as kernel sockets: it binds a SYN queue and adds the rules
// that feed it in a network namespace of its own (gone with the check).
func checkKernelSockets(env Env) Result {
	r := Result{Check: "kernel sockets"}
	err := inNewNetns(func() error {
		q, err := synqueue.Open(nil, synqueue.Config{Num: 1})
		if err != nil {
			return err
		}
		defer q.Close()
		rules := synqueue.Rules{RunID: "doctor", Link: "tp0", Queue: 1, TakePort: 1, Marks: synqueue.DefaultMarks}
		return rules.InstallHere()
	})
	if err != nil {
		r.Status, r.Detail = Warn, fmt.Sprintf("the app's TCP connections go through trafficpolice's netstack, not as kernel sockets (slower: README, Kernel sockets): %v", err)
		r.Fix = "a kernel with nfnetlink_queue and the NFQUEUE, REDIRECT and REJECT targets (CONFIG_NETFILTER_NETLINK_QUEUE, CONFIG_NETFILTER_XT_TARGET_NFQUEUE; iptables-nft also CONFIG_NFT_COMPAT); or nothing: every run still works"
		return r
	}
	r.Status, r.Detail = OK, "the app's TCP connections are taken as kernel sockets, dial first"
	return r
}

func checkStateDir(env Env) Result {
	r := Result{Check: "state"}
	if err := os.MkdirAll(env.StateDir, 0o755); err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cannot create %s: %v", env.StateDir, err)
		r.Fix = "run with sudo, or make it creatable (runs record what they create there, so that a killed run is cleaned up)"
		return r
	}
	f, err := os.CreateTemp(env.StateDir, ".preflight-*")
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cannot write in %s: %v", env.StateDir, err)
		r.Fix = "run with sudo, or make " + env.StateDir + " writable"
		return r
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
	r.Status, r.Detail = OK, filepath.Clean(env.StateDir)+" is writable"
	return r
}

func checkContainerd(ctx context.Context, env Env) Result {
	r := Result{Check: "containerd"}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "unix", env.ContainerdAddress)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("--image %s needs containerd, and %s does not answer: %v", env.Image, env.ContainerdAddress, err)
		r.Fix = "install and start containerd (apt-get install containerd; systemctl start containerd)"
		return r
	}
	_ = c.Close()
	r.Status, r.Detail = OK, "containerd answers at "+env.ContainerdAddress
	return r
}
