package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The peers are what a user without root would otherwise run an app's
// network through: pasta (Debian's passt) and slirp4netns. Each makes a
// user and network namespace and carries the app's flows as sockets of
// the host, the same route as trafficpolice's local path. They run as an
// unprivileged user (pasta refuses root), started through "bench peer
// KIND -- CLIENT ARGS", a wrapper that the bench starts as root in a new
// PID and mount namespace:
//
//   - the PID namespace ends every process of the peer (the peer, the
//     app, the namespace holder) when the wrapper, its init, ends, and the
//     wrapper ends when the bench does (parent-death signal): a Ctrl-C or
//     a kill -9 leaves no process and so no namespace behind;
//   - the mount namespace gives the peer a /dev/net/tun it may open (a
//     fresh node of mode 0666 on a private tmpfs, as Debian and Ubuntu ship
//     it) without changing the host's device, and a /proc of its own PID
//     namespace, where the peers look up their processes.

// peerUser runs the peers: a user every Debian system has.
const peerUser = "nobody"

// peerTool is a peer's binary and the Debian package that has it.
func peerTool(p path) (bin, pkg string) {
	if p == pastaPath {
		return "pasta", "passt"
	}
	return "slirp4netns", "slirp4netns"
}

// peerMissing says why p's rows cannot run here, or "" when they can.
func peerMissing(p path) string {
	bin, pkg := peerTool(p)
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Sprintf("%s is not installed: apt-get install -y %s", bin, pkg)
	}
	if p == slirpPath {
		if _, err := exec.LookPath("unshare"); err != nil {
			return "unshare (util-linux) is not installed: apt-get install -y util-linux"
		}
	}
	if _, err := user.Lookup(peerUser); err != nil {
		return fmt.Sprintf("the peers run as user %q, which does not exist here: %v", peerUser, err)
	}
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if err == nil && strings.TrimSpace(string(b)) == "0" {
		return "user namespaces are disabled (sysctl user.max_user_namespaces=0)"
	}
	return ""
}

// peerCommand is the wrapper that runs client on peer p.
func (r *runner) peerCommand(ctx context.Context, p path, client []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.self, append([]string{"peer", p.String(), "--"}, client...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	// The wrapper is its PID namespace's init: its end is everyone's.
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// peerMain is "bench peer KIND -- CLIENT ARGS", as root, init of a new PID
// and mount namespace (see peerCommand). It prepares the namespace, runs
// the client through the peer as peerUser and exits with its status.
func peerMain(args []string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "bench peer: %v\n", err)
		return 1
	}
	if len(args) < 3 || args[1] != "--" {
		return fail(errors.New("usage: bench peer pasta|slirp4netns -- CLIENT ARGS"))
	}
	kind, client := args[0], args[2:]
	// As init, the wrapper would ignore a SIGTERM it does not handle. (No
	// signal.Ignore here: the peers inherit ignored signals, and pasta
	// refuses to start when SIGPIPE already is.)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench peer: %v: ending\n", s)
		os.Exit(1)
	}()
	if err := peerMounts(); err != nil {
		return fail(err)
	}
	cred, err := peerCredential()
	if err != nil {
		return fail(err)
	}
	switch kind {
	case "pasta":
		err = runPasta(cred, client)
	case "slirp4netns":
		err = runSlirp(cred, client)
	default:
		err = fmt.Errorf("peer %q: want pasta or slirp4netns", kind)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() > 0 {
		return exit.ExitCode() // the client said why on stderr
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// peerMounts makes the wrapper's mounts private, mounts /proc for its PID
// namespace and puts a /dev/net/tun the peer user may open on a tmpfs.
func peerMounts() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := unix.Mount("tmpfs", "/dev/net", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755"); err != nil {
		return fmt.Errorf("mount a tmpfs on /dev/net: %w", err)
	}
	// mknod's mode is cut by the umask; chmod sets it whole.
	if err := unix.Mknod("/dev/net/tun", unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		return fmt.Errorf("mknod /dev/net/tun: %w", err)
	}
	if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
		return fmt.Errorf("chmod /dev/net/tun: %w", err)
	}
	return nil
}

func peerCredential() (*syscall.Credential, error) {
	u, err := user.Lookup(peerUser)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", peerUser, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %s's ids %q:%q: %w", peerUser, u.Uid, u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// asPeerUser runs cmd as cred with this process's stdio.
func asPeerUser(cmd *exec.Cmd, cred *syscall.Credential) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Dir = "/"
	return cmd
}

// runPasta runs the client under pasta, which makes the user and network
// namespace itself and configures its interface like the host's (address,
// gateway), with the MTU of trafficpolice's TUN, and no port forwarding
// (its default would bind the host's and the namespace's listening ports).
func runPasta(cred *syscall.Credential, client []string) error {
	args := []string{"--config-net", "--quiet", "--foreground", "--mtu", "65520",
		"-t", "none", "-u", "none", "-T", "none", "-U", "none", "--"}
	return asPeerUser(exec.Command("pasta", append(args, client...)...), cred).Run()
}

// runSlirp runs the client in a user and network namespace made by
// unshare as the peer user, wired up by slirp4netns from outside. The
// client is held at a gate ("bench peer-gate") until slirp4netns says its
// interface is configured; the gate first says the namespaces exist, so
// slirp4netns never looks at the process before it has them.
func runSlirp(cred *syscall.Credential, client []string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program: %w", err)
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer gateW.Close()
	upR, upW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer upR.Close()
	ns := asPeerUser(exec.Command("unshare", append([]string{"--user", "--map-root-user", "--net", "--",
		self, "peer-gate", "--"}, client...)...), cred)
	ns.ExtraFiles = []*os.File{gateR, upW} // fds 3 and 4
	err = ns.Start()
	gateR.Close()
	upW.Close()
	if err != nil {
		return fmt.Errorf("start unshare: %w", err)
	}
	abort := func(err error) error {
		ns.Process.Kill()
		ns.Wait()
		return err
	}
	if err := readSignal(upR); err != nil {
		return abort(fmt.Errorf("the namespace's process ended before it had its namespaces: %w", err))
	}

	readyR, readyW, err := os.Pipe()
	if err != nil {
		return abort(err)
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		return abort(err)
	}
	defer exitW.Close()
	slirp := asPeerUser(exec.Command("slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
		"--ready-fd=3", "--exit-fd=4", strconv.Itoa(ns.Process.Pid), "tap0"), cred)
	slirp.Stdin, slirp.Stdout = nil, nil // its stdout only says it passed the tap fd; the client owns ours
	slirp.ExtraFiles = []*os.File{readyW, exitR}
	err = slirp.Start()
	readyW.Close()
	exitR.Close()
	if err != nil {
		return abort(fmt.Errorf("start slirp4netns: %w", err))
	}
	stopSlirp := func() {
		exitW.Close() // slirp4netns ends when its exit fd closes
		slirp.Wait()
	}
	if err := readSignal(readyR); err != nil {
		stopSlirp()
		return abort(fmt.Errorf("slirp4netns did not report ready: %w", err))
	}
	if _, err := gateW.Write([]byte("1")); err != nil {
		stopSlirp()
		return abort(fmt.Errorf("open the client's gate: %w", err))
	}
	gateW.Close()
	err = ns.Wait()
	stopSlirp()
	return err
}

// readSignal waits for one byte on r; EOF means the writer ended first.
func readSignal(r io.Reader) error {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	return nil
}

// gateMain is "bench peer-gate -- CLIENT ARGS" inside slirp4netns's
// namespaces: it says it is there (fd 4), waits for the wrapper's go (fd 3)
// and becomes the client.
func gateMain(args []string) int {
	if len(args) < 2 || args[0] != "--" {
		fmt.Fprintln(os.Stderr, "bench peer-gate: usage: bench peer-gate -- CLIENT ARGS")
		return 2
	}
	up, gate := os.NewFile(4, "up"), os.NewFile(3, "gate")
	if _, err := up.Write([]byte("1")); err != nil {
		fmt.Fprintf(os.Stderr, "bench peer-gate: say it is up: %v\n", err)
		return 1
	}
	up.Close()
	if err := readSignal(gate); err != nil {
		fmt.Fprintf(os.Stderr, "bench peer-gate: the wrapper ended before the network was ready: %v\n", err)
		return 1
	}
	gate.Close()
	err := syscall.Exec(args[1], args[1:], os.Environ())
	fmt.Fprintf(os.Stderr, "bench peer-gate: exec %s: %v\n", args[1], err)
	return 1
}
