package launch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

func TestMain(m *testing.M) {
	MaybeRunInit()
	if os.Getenv(helperEnv) != "" {
		runHelper()
		return
	}
	if os.Getenv(userDBEnv) != "" {
		runUserDBHelper()
		return
	}
	os.Exit(m.Run())
}

// ourMounts counts the mountinfo lines that mention any of words.
func ourMounts(t *testing.T, words ...string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				n++
				break
			}
		}
	}
	return n
}

// sandbox makes a namespace and files for one test, and checks at the end
// that no namespace, mount or process of the test is left.
type sandbox struct {
	ns               *netns.Namespace
	dir              string
	resolv, hosts    string
	hostResolvBefore []byte
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	n := netnstest.Namespace(t, "tpt")
	s := &sandbox{ns: n, dir: t.TempDir()}
	s.resolv = filepath.Join(s.dir, "resolv.conf")
	s.hosts = filepath.Join(s.dir, "hosts")
	for file, body := range map[string]string{
		s.resolv: "nameserver 198.18.0.53\n# " + n.Name() + "\n",
		s.hosts:  "127.0.0.1 localhost\n198.18.0.9 " + n.Name() + ".test\n",
	} {
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.hostResolvBefore, _ = os.ReadFile("/etc/resolv.conf")
	// The namespace's own mount is checked by netnstest, after this
	// cleanup: here, the mounts the app's launch may have leaked.
	words := []string{s.dir, " /etc/resolv.conf ", " /etc/hosts "}
	mountsBefore := ourMounts(t, words...)
	t.Cleanup(func() {
		if got := ourMounts(t, words...); got != mountsBefore {
			t.Errorf("mounts of ours in /proc/self/mountinfo: %d, want %d as before", got, mountsBefore)
		}
		if after, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(after, s.hostResolvBefore) {
			t.Errorf("the host's /etc/resolv.conf changed:\n%s", after)
		}
	})
	return s
}

func (s *sandbox) spec(argv ...string) Spec {
	return Spec{NetnsPath: s.ns.Path(), ResolvConf: s.resolv, Hosts: s.hosts, Argv: argv, Dir: "/"}
}

// run starts spec, waits, and returns its stdout and Wait's error.
func run(t *testing.T, spec Spec) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	spec.Stdout, spec.Stderr = &out, &errOut
	cmd, err := Start(spec)
	if err != nil {
		t.Fatalf("Start(%q): %v", spec.Argv, err)
	}
	werr := cmd.Wait()
	if errOut.Len() > 0 {
		t.Logf("stderr of %q: %s", spec.Argv, errOut.String())
	}
	return out.String(), werr
}

func TestSeesSandboxFilesAndNetns(t *testing.T) {
	s := newSandbox(t)
	out, err := run(t, s.spec("sh", "-c", "cat /etc/resolv.conf /etc/hosts; readlink /proc/self/ns/net"))
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(s.ns.Path(), &st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nameserver 198.18.0.53", s.ns.Name() + ".test", fmt.Sprintf("net:[%d]", st.Ino)} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if hosts, _ := os.ReadFile("/etc/hosts"); strings.Contains(string(hosts), s.ns.Name()) {
		t.Error("the host's /etc/hosts shows the sandbox's")
	}
}

func TestProcessIsTheApp(t *testing.T) {
	s := newSandbox(t)
	cmd, err := Start(s.spec("sleep", "100"))
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
	if !strings.HasSuffix(exe, "sleep") {
		t.Errorf("pid %d runs %q, want sleep", cmd.Process.Pid, exe)
	}
	pids, _ := netns.Processes(s.ns)
	if len(pids) != 1 || pids[0] != cmd.Process.Pid {
		t.Errorf("processes in the netns: %v, want [%d]", pids, cmd.Process.Pid)
	}
	// Beyond stdio the app may have opened files of its own (sleep reads
	// locale files), but no pipe, socket or device of ours may leak.
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", cmd.Process.Pid, fd.Name()))
		if err != nil {
			continue // closed since the listing: a file of the app's own (seen in CI: "3=")
		}
		if n, _ := strconv.Atoi(fd.Name()); n > 2 && !strings.HasPrefix(target, "/usr/") && !strings.HasPrefix(target, "/etc/") {
			t.Errorf("descriptor %d=%s leaked into the app", n, target)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("Wait = %v, want killed by SIGTERM", err)
	}
}

func TestExitStatusPassesThrough(t *testing.T) {
	s := newSandbox(t)
	_, err := run(t, s.spec("sh", "-c", "exit 7"))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("exit 7 gave %v", err)
	}
	_, err = run(t, s.spec("sh", "-c", "kill -KILL $$"))
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("kill -KILL gave %v", err)
	}
	if _, err := run(t, s.spec("true")); err != nil {
		t.Errorf("true gave %v", err)
	}
}

func TestStdioAndEnv(t *testing.T) {
	s := newSandbox(t)
	spec := s.spec("sh", "-c", `cat; echo "[$FOO]"; pwd`)
	spec.Stdin = strings.NewReader("from stdin\n")
	spec.Env = []string{"FOO=bar baz", "PATH=/usr/bin:/bin"}
	spec.Dir = s.dir
	out, err := run(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	if want := "from stdin\n[bar baz]\n" + s.dir + "\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestRunsAsGivenUser(t *testing.T) {
	s := newSandbox(t)
	uid, gid := uint32(65534), uint32(65534)
	spec := s.spec("sh", "-c", "id -u; id -g; id -G; cat /etc/resolv.conf >/dev/null && echo readable; grep -E '^(Cap(Eff|Prm)):' /proc/self/status")
	spec.UID, spec.GID = &uid, &gid
	spec.Groups = []uint32{65534, 100}
	out, err := run(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 6 || lines[0] != "65534" || lines[1] != "65534" || lines[2] != "65534 100" || lines[3] != "readable" {
		t.Fatalf("output:\n%s", out)
	}
	for _, l := range lines[4:6] {
		if !strings.HasSuffix(l, "0000000000000000") {
			t.Errorf("capabilities left: %s", l)
		}
	}
}

// The user database test runs Start in a helper process with a private
// mount namespace, where the test's own passwd and group files are bound
// over /etc's: the expected groups are then known without asking the code
// under test (or the host's database, which varies) for them.

const userDBEnv = "TP_LAUNCH_TEST_USERDB" // "NETNS-PATH DIR": DIR holds passwd, group, resolv.conf, hosts

// The test's user database: tpuser (4242, primary group 4242) is a member
// of 4300 and 4301, not of 4302.
const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\ntpuser:x:4242:4242::/nonexistent:/bin/sh\n"
	testGroup  = "root:x:0:\ntpgroup:x:4242:\ntpextra1:x:4300:tpuser\ntpextra2:x:4301:someone,tpuser\ntpother:x:4302:someone\n"
)

func runUserDBHelper() {
	netnsPath, dir, _ := strings.Cut(os.Getenv(userDBEnv), " ")
	for _, f := range []string{"passwd", "group"} {
		if err := syscall.Mount(filepath.Join(dir, f), "/etc/"+f, "", syscall.MS_BIND, ""); err != nil {
			fmt.Println("error: bind", f, err)
			os.Exit(1)
		}
	}
	uid, gid := uint32(4242), uint32(4242)
	cmd, err := Start(Spec{NetnsPath: netnsPath, ResolvConf: filepath.Join(dir, "resolv.conf"), Hosts: filepath.Join(dir, "hosts"),
		Argv: []string{"id", "-G"}, UID: &uid, GID: &gid, Dir: "/", Stdout: os.Stdout, Stderr: os.Stdout})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if err := cmd.Wait(); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func TestGroupsComeFromTheUserDatabaseWhenNotGiven(t *testing.T) {
	s := newSandbox(t)
	for f, body := range map[string]string{"passwd": testPasswd, "group": testGroup} {
		if err := os.WriteFile(filepath.Join(s.dir, f), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), userDBEnv+"="+s.ns.Path()+" "+s.dir)
	// A mount namespace of its own (Go makes its mounts private), so the
	// bind mounts over /etc never reach the host.
	helper.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := helper.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	slices.Sort(got)
	if want := []string{"4242", "4300", "4301"}; !slices.Equal(got, want) {
		t.Errorf("id -G of tpuser = %q, want the groups %v of the test's database", out, want)
	}
	if b, _ := os.ReadFile("/etc/group"); strings.Contains(string(b), "tpextra1") {
		t.Error("the test's group file shows on the host")
	}
}

func TestCommandNotFound(t *testing.T) {
	s := newSandbox(t)
	notExec := filepath.Join(s.dir, "not-exec")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct {
		argv0, msg string
		code       int
	}{
		{"./does-not-exist", "./does-not-exist: no such file or directory", 127},
		{"no-such-command-tp", "no-such-command-tp: command not found", 127},
		{notExec, notExec + ": permission denied", 126},
		{s.dir, s.dir + ": is a directory", 126},
	} {
		cmd, err := Start(s.spec(tc.argv0))
		if err == nil {
			cmd.Wait()
			t.Errorf("Start(%s) succeeded", tc.argv0)
			continue
		}
		var se *StartError
		if !errors.As(err, &se) || err.Error() != tc.msg || se.ExitCode != tc.code {
			t.Errorf("Start(%s) = %v (%#v), want %q exit %d", tc.argv0, err, se, tc.msg, tc.code)
		}
	}
	_, err := Start(s.spec("./does-not-exist"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", err)
	}
}

func TestBadSpec(t *testing.T) {
	netnstest.RequireRoot(t)
	uid := uint32(1)
	for _, spec := range []Spec{
		{Argv: []string{"true"}},
		{NetnsPath: "/proc/self/ns/net"},
		{NetnsPath: "/proc/self/ns/net", Argv: []string{"true"}, UID: &uid},
		{NetnsPath: "/proc/self/ns/net", Argv: []string{"true"}, ResolvConf: "/nonexistent/resolv.conf"},
		{NetnsPath: "/nonexistent/netns", Argv: []string{"true"}},
	} {
		if _, err := Start(spec); err == nil {
			t.Errorf("Start(%+v) succeeded", spec)
		}
	}
}

func TestBindOverDanglingSymlinkAndMissingTarget(t *testing.T) {
	s := newSandbox(t)
	link := filepath.Join(s.dir, "link")
	if err := os.Symlink(filepath.Join(s.dir, "missing"), link); err != nil {
		t.Fatal(err)
	}
	spec := s.spec("cat", link)
	spec.extraBinds = []bindMount{{s.resolv, link}}
	out, err := run(t, spec)
	if err != nil || !strings.Contains(out, "nameserver 198.18.0.53") {
		t.Errorf("cat over the dangling symlink: %q, %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the symlink's target was created on the host: %v", err)
	}

	spec.extraBinds = []bindMount{{s.resolv, filepath.Join(s.dir, "nothing-here")}}
	_, err = Start(spec)
	var se *StartError
	if !errors.As(err, &se) || se.Step != "mount" || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("bind over a missing file: %v", err)
	}
}

func TestCredentialsFromSudo(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	u, g, err := credentialsFrom(env(map[string]string{"SUDO_UID": "1000", "SUDO_GID": "1001"}), 0)
	if err != nil || u == nil || *u != 1000 || *g != 1001 {
		t.Errorf("got %v %v %v", u, g, err)
	}
	if u, g, err := credentialsFrom(env(nil), 0); u != nil || g != nil || err != nil {
		t.Errorf("no sudo: %v %v %v", u, g, err)
	}
	if u, _, err := credentialsFrom(env(map[string]string{"SUDO_UID": "1000", "SUDO_GID": "1001"}), 1000); u != nil || err != nil {
		t.Errorf("not root: %v %v", u, err)
	}
	for _, m := range []map[string]string{
		{"SUDO_UID": "x", "SUDO_GID": "1"},
		{"SUDO_UID": "1", "SUDO_GID": "-1"},
		{"SUDO_UID": "1"},
	} {
		if _, _, err := credentialsFrom(env(m), 0); err == nil {
			t.Errorf("%v accepted", m)
		}
	}
}

// The parent-death test runs Start in a helper process, kills the helper,
// and checks that the app (running as nobody, so after a credential
// change) dies with it.

const helperEnv = "TP_LAUNCH_TEST_HELPER_NETNS"

func runHelper() {
	uid, gid := uint32(65534), uint32(65534)
	cmd, err := Start(Spec{NetnsPath: os.Getenv(helperEnv), Argv: []string{"sleep", "1000"}, UID: &uid, GID: &gid, Dir: "/"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(cmd.Process.Pid)
	select {}
}

func TestAppDiesWithTrafficpolice(t *testing.T) {
	s := newSandbox(t)
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"="+s.ns.Path())
	stdout, _ := helper.StdoutPipe()
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		helper.Process.Kill()
		helper.Wait()
		t.Fatalf("helper: %q %v", line, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		helper.Process.Kill()
		helper.Wait()
		t.Fatalf("helper said %q", line)
	}
	if pids, _ := netns.Processes(s.ns); len(pids) != 1 || pids[0] != pid {
		t.Errorf("processes in the netns: %v, want [%d]", pids, pid)
	}
	helper.Process.Kill()
	helper.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, _ := netns.Processes(s.ns)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app (pid %d) outlived trafficpolice", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Under sudo the environment still names root (HOME=/root, USER=root):
// the app, running as the invoking user, gets that user's own.
func TestAsAnotherUserTheAppGetsItsHomeAndName(t *testing.T) {
	s := newSandbox(t)
	uid, gid := uint32(65534), uint32(65534)
	u, err := user.LookupId("65534")
	if err != nil {
		t.Fatalf("user 65534 is not in the user database: %v", err)
	}
	spec := s.spec("sh", "-c", `echo "$HOME|$USER|$LOGNAME|$KEEP"`)
	spec.UID, spec.GID = &uid, &gid
	spec.Env = []string{"HOME=/root", "USER=root", "LOGNAME=root", "KEEP=kept", "PATH=/usr/bin:/bin"}
	out, err := run(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	if want := u.HomeDir + "|" + u.Username + "|" + u.Username + "|kept\n"; out != want {
		t.Fatalf("HOME|USER|LOGNAME|KEEP = %q, want %q", out, want)
	}
	// As root (no UID), the environment is left as given.
	spec.UID, spec.GID = nil, nil
	if out, err := run(t, spec); err != nil || out != "/root|root|root|kept\n" {
		t.Fatalf("as root: %q, %v", out, err)
	}
}

// A prestarted helper runs the app as Start's does: in the namespace, with
// the sandbox's files, the streams Prestart was given and the app's exit
// status.
func TestPrestartedHelperRunsTheApp(t *testing.T) {
	s := newSandbox(t)
	var out bytes.Buffer
	ps, err := Prestart(nil, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Abandon()
	cmd, err := ps.Start(s.spec("sh", "-c", "head -1 /etc/resolv.conf; readlink /proc/self/ns/net; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("exit 3 gave %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(s.ns.Path(), &st); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("nameserver 198.18.0.53\nnet:[%d]\n", st.Ino); out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	ps.Abandon() // after Start: a no-op
	if _, err := ps.Start(s.spec("true")); err == nil {
		t.Error("a prestarted helper started a second app")
	}
}

// An abandoned helper is killed and reaped; one whose spec is bad reports
// it, as Start does, and is reaped too.
func TestPrestartedHelperLeavesNothing(t *testing.T) {
	s := newSandbox(t)
	ps, err := Prestart(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := ps.h.cmd.Process.Pid
	ps.Abandon()
	ps.Abandon()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the abandoned helper (pid %d) is still there: kill 0 = %v", pid, err)
	}
	ps, err = Prestart(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid = ps.h.cmd.Process.Pid
	var se *StartError
	if _, err := ps.Start(s.spec()); !errors.As(err, &se) || se.Step != "spec" {
		t.Errorf("Start with no argv = %v, want a spec error", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the helper of a bad spec (pid %d) is still there: kill 0 = %v", pid, err)
	}
	ps, err = Prestart(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Abandon()
	if _, err := ps.Start(s.spec("no-such-command-" + s.ns.Name())); !errors.As(err, &se) || se.ExitCode != 127 {
		t.Errorf("a command that is not found: %v, want exit code 127", err)
	}
	if pids, _ := netns.Processes(s.ns); len(pids) != 0 {
		t.Errorf("processes left in the netns: %v", pids)
	}
}
