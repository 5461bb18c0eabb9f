package sandbox

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router"
)

// Rootless runs, as an ordinary user the test creates and as root with
// --rootless.

// runAs runs the built command as u and returns its exit status and output.
func runAs(t *testing.T, u netnstest.User, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := u.Command(cli(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if cmd.ProcessState == nil {
		t.Fatalf("trafficpolice %v as %s: %v", args, u.Name, err)
	}
	t.Logf("trafficpolice %v as %s: exit %d\nstdout: %s\nstderr: %s", args, u.Name, cmd.ProcessState.ExitCode(), trim(out.String()), trim(errOut.String()))
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// processesOf lists the processes that run as uid.
func processesOf(uid uint32) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name(), &st) == nil && st.Uid == uid && !zombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// zombie reports whether pid has exited and waits to be reaped: it runs
// nothing and holds nothing of the run's (its namespaces went at exit), but
// keeps its /proc entry until its parent, or init once orphaned, reaps it,
// which on a loaded machine can take a while.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone meanwhile
	}
	// "pid (comm) S ...": the state follows the last ')' (comm may hold any).
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// describe is the processes' command lines and states, for a failure.
func describe(pids []int) string {
	var out []string
	for _, pid := range pids {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		state := "?"
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
			state = string(stat[i+2])
		}
		out = append(out, fmt.Sprintf("%d %s %q", pid, state, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
	}
	return strings.Join(out, "; ")
}

// wantUserLeftNothing waits, bounded, until no process of u is left, and
// checks that u's state folder holds no run; when says after what.
func wantUserLeftNothing(t *testing.T, u netnstest.User, when string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for left := processesOf(u.UID); len(left) > 0; left = processesOf(u.UID) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for the user's processes to end %s: %s", when, describe(left))
		}
		time.Sleep(20 * time.Millisecond) // polling for their end, not synchronising
	}
	entries, _ := os.ReadDir(filepath.Join(os.TempDir(), fmt.Sprintf("trafficpolice-%d", u.UID)))
	if len(entries) != 0 {
		t.Errorf("the user's state folder keeps %d entries %s", len(entries), when)
	}
}

func TestRootlessRunAsAnOrdinaryUser(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	u := netnstest.NewUser(t)
	netnstest.TUNOpenToAll(t)
	svc := newServiceNet(t)
	serveEcho(svc.listen(t, 7000))
	ln := hostListener(t)
	serveEcho(ln)
	p := portOf(ln)
	probe := probe(t)
	flows := filepath.Join(u.Home, "flows.jsonl")

	script := fmt.Sprintf(`id -u; id -g; grep CapEff /proc/self/status; echo "home=$HOME"
		%[1]s echo 127.0.0.1:%[2]s 3
		%[1]s echo %[3]s:7000 3
		%[1]s self
		%[1]s dial 127.0.0.1:1
		%[1]s dial %[3]s:7001
		%[1]s serve-whoami :80 low & srv=$! i=0
		until %[1]s read 127.0.0.1:80; do i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.1; done
		kill $srv`, probe, p, svc.svcIP)
	code, stdout, stderr := runAs(t, u, "sandbox", "run", "--local", ":"+p, "--flow-log", flows, "--", "sh", "-c", script)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	// The app is the user, as the user sees themselves, with no capability.
	want := []string{
		fmt.Sprintf("%d\n%d\n", u.UID, u.GID),
		"CapEff:\t0000000000000000",
		"home=" + u.Home,
		"3 echoed", // the host's loopback by the --local rule
		"self: me", // the app's own listener, through the holder's socket
		"connection refused",
		"low peer=127.0.0.1", // a low port, as in a container
	}
	for _, w := range want {
		contains(t, stdout, w)
	}
	if n := strings.Count(stdout, "3 echoed"); n != 2 {
		t.Errorf("want the host's loopback and the service namespace each to echo: %d echoes", n)
	}
	contains(t, stdout, svc.svcIP.String()+":7001: connect: connection refused") // dial first, rootless too
	// The app's TCP to the service is taken as kernel sockets here too:
	// the holder binds the queue and adds the rules.
	recs := readFlowLog(t, flows)
	taken := 0
	for _, rec := range recs {
		if rec.Dst == svc.svcIP.String()+":7000" && rec.Via == router.ViaKernelSocket && rec.BytesIn == 8 {
			taken++
		}
	}
	if taken != 3 {
		t.Errorf("%d of the 3 connections to the service were taken as kernel sockets with their bytes; flow log: %+v", taken, recs)
	}
	contains(t, stderr, "✓ namespace ready")

	// Nothing of the run is left: no process of the user, no state.
	wantUserLeftNothing(t, u, "")
}

func TestRootlessKilledRunIsCollectedByTheUsersGC(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	u := netnstest.NewUser(t)
	netnstest.TUNOpenToAll(t)
	cmd := u.Command(cli(t), "sandbox", "run", "-q", "--", "sh", "-c", "echo up; exec sleep 600")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the app to start", func() bool { return strings.Contains(out.String(), "up") })
	// The shell prints "up" before it becomes sleep (exec): wait for that.
	var appNetns netns.ID
	waitUntil(t, 10*time.Second, "the app to become sleep", func() bool {
		for _, pid := range processesOf(u.UID) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.HasPrefix(b, []byte("sleep")) {
				appNetns, _ = netns.IDOf(fmt.Sprintf("/proc/%d/ns/net", pid))
			}
		}
		return appNetns.Ino != 0
	})
	cmd.Process.Kill()
	cmd.Wait()
	// The holder and the app die with trafficpolice (parent-death signals);
	// a grandchild that left its parent would stay: gc finds it by the
	// namespace the record names.
	if code, _, _ := runAs(t, u, "sandbox", "gc"); code != 0 {
		t.Fatalf("gc: exit %d", code)
	}
	wantUserLeftNothing(t, u, "after gc")
}

func TestRootlessWithoutTUNAccessSaysWhatToDo(t *testing.T) {
	netnstest.RequireRoot(t)
	setpriv := netnstest.RequireCommand(t, "setpriv", "util-linux")
	u := netnstest.NewUser(t)
	// A TUN device node only root may open, over /dev/net/tun in a mount
	// namespace of this test's: what a machine with mode 0600 has.
	dir := t.TempDir()
	node := filepath.Join(dir, "tun")
	if err := syscall.Mknod(node, syscall.S_IFCHR|0o600, int(10<<8|200)); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	cmd := exec.Command("unshare", "-m", "sh", "-c", fmt.Sprintf("mount --make-rprivate / && mount --bind %s /dev/net/tun && exec %s --reuid %d --regid %d --clear-groups env HOME=%s %s sandbox run -- true",
		node, setpriv, u.UID, u.GID, u.Home, cli(t)))
	cmd.Dir = u.Home
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("output:\n%s", out.String())
	if cmd.ProcessState == nil {
		t.Fatal(err)
	}
	if code := cmd.ProcessState.ExitCode(); code != 125 {
		t.Errorf("exit %d, want 125", code)
	}
	for _, w := range []string{"preflight tun", "/dev/net/tun cannot be opened", "run with sudo, or", "chmod 0666 /dev/net/tun"} {
		contains(t, out.String(), w)
	}
}

func TestRootlessAsRootServesTheSameFlows(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	serveEcho(svc.listen(t, 7000))
	probe := probe(t)
	rootless := func(o *Options) { o.Rootless = true }
	r := run(t, nil, ExtraRules{}, []string{"sh", "-c", fmt.Sprintf("%[1]s echo %[2]s:7000 5; %[1]s self; %[1]s udp 127.0.0.1:9; exit 7", probe, svc.svcIP)}, rootless)
	if r.err != nil || r.code != 7 {
		t.Fatalf("want the app's exit status 7: %+v", r)
	}
	contains(t, r.stdout, "5 echoed")
	contains(t, r.stdout, "self: me")
	r = run(t, nil, ExtraRules{}, []string{"sh", "-c", "kill -TERM $$"}, rootless)
	if r.err != nil || r.code != 128+int(syscall.SIGTERM) {
		t.Errorf("an app killed by SIGTERM: %+v, want exit %d", r, 128+int(syscall.SIGTERM))
	}
	r = run(t, nil, ExtraRules{}, []string{"/nonexistent/app"}, rootless)
	if r.err != nil || r.code != 127 {
		t.Errorf("a missing app: %+v, want exit 127", r)
	}
}

func TestRootlessSignalToCLIReachesAppAndLeavesNothing(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	u := netnstest.NewUser(t)
	netnstest.TUNOpenToAll(t)
	// The user keeps no runtime folder: the record goes to /tmp, which
	// root's gc also sweeps.
	cmd := u.Command(cli(t), "sandbox", "run", "-q", "--", "sh", "-c", "trap 'exit 42' INT; echo ready; while :; do sleep 0.1; done")
	stdout, _ := cmd.StdoutPipe()
	must(t, cmd.Start())
	buf := make([]byte, 6)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("app did not start: %q %v", buf, err)
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if cmd.ProcessState.ExitCode() != 42 {
		t.Fatalf("exit status %d (%v), want the app's 42", cmd.ProcessState.ExitCode(), err)
	}
	wantUserLeftNothing(t, u, "")
}

func TestRootlessKilledRunIsCollectedByRootsGC(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	u := netnstest.NewUser(t)
	netnstest.TUNOpenToAll(t)
	// The app leaves a grandchild that outlives trafficpolice and the
	// holder: it keeps the namespace alive until gc kills it.
	cmd := u.Command(cli(t), "sandbox", "run", "-q", "--", "sh", "-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo up; exec sleep 600")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	must(t, cmd.Start())
	waitUntil(t, 30*time.Second, "the app to start", func() bool { return strings.Contains(out.String(), "up") })
	cmd.Process.Kill()
	cmd.Wait()
	waitUntil(t, 10*time.Second, "the holder to die with trafficpolice", func() bool {
		for _, pid := range processesOf(u.UID) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.HasPrefix(b, []byte("trafficpolice")) {
				return false
			}
		}
		return true
	})
	if left := processesOf(u.UID); len(left) == 0 {
		t.Fatalf("the grandchild did not outlive the run; the test needs it")
	}
	if code, _, _ := runCLI(t, "sandbox", "gc"); code != 0 {
		t.Fatalf("root's gc: exit %d", code)
	}
	wantUserLeftNothing(t, u, "after root's gc (the grandchild killed)")
}
