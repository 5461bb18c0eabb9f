package container

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestParseMount(t *testing.T) {
	wd, _ := os.Getwd()
	for in, want := range map[string]Mount{
		"/src:/dst":     {Source: "/src", Destination: "/dst"},
		"/src:/dst:ro":  {Source: "/src", Destination: "/dst", ReadOnly: true},
		"/src:/dst/:rw": {Source: "/src", Destination: "/dst"},
		"data:/data":    {Source: filepath.Join(wd, "data"), Destination: "/data"},
	} {
		got, err := ParseMount(in)
		if err != nil || got != want {
			t.Errorf("ParseMount(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "/src", ":/dst", "/src:", "/src:dst", "/src:/dst:rx", "/a:/b:ro:x"} {
		if _, err := ParseMount(in); err == nil || !strings.Contains(err.Error(), "--mount") {
			t.Errorf("ParseMount(%q): error %v, want one naming --mount", in, err)
		}
	}
}

func TestNoDaemonSaysHowToStartOne(t *testing.T) {
	_, err := Connect(context.Background(), filepath.Join(t.TempDir(), "containerd.sock"))
	var nd *NoDaemonError
	if !errors.As(err, &nd) {
		t.Fatalf("error %v, want a NoDaemonError", err)
	}
	for _, want := range []string{"containerd.sock", "start one", "--containerd-address", AddressEnv} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestExitStatusPassesThrough(t *testing.T) {
	e := newEnv(t)
	if r := e.mustRun(e.spec("sh", "-c", "echo out; echo err >&2; exit 7")); r.code != 7 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("got %+v, want status 7, out and err", r)
	}
}

func TestJoinsTheSandboxNetnsAndSeesItsResolverFiles(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	s := e.spec("sh", "-c", "stat -L -c %i /proc/self/ns/net; cat /etc/resolv.conf /etc/hosts")
	s.ResolvConf, s.Hosts = filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "hosts")
	must(t, os.WriteFile(s.ResolvConf, []byte("nameserver 198.18.0.53\n"), 0o644))
	must(t, os.WriteFile(s.Hosts, []byte("198.18.0.9 only-in-"+s.ID+"\n"), 0o644))
	r := e.mustRun(s)
	var st unix.Stat_t
	must(t, unix.Stat(e.netns.Path(), &st))
	contains(t, r.stdout, strconv.FormatUint(st.Ino, 10)+"\n")
	contains(t, r.stdout, "nameserver 198.18.0.53")
	contains(t, r.stdout, "only-in-"+s.ID)
}

func TestBindsTheCurrentFolderAndRunsAsTheInvokingUser(t *testing.T) {
	e := newEnv(t)
	cwd := t.TempDir()
	must(t, os.Chmod(cwd, 0o777))
	must(t, os.WriteFile(filepath.Join(cwd, "in"), []byte("from the host\n"), 0o644))
	uid, gid := uint32(4321), uint32(4322)
	s := e.spec("sh", "-c", "pwd; id -u; id -g; cat in; echo made > out")
	s.Cwd, s.UID, s.GID = cwd, &uid, &gid
	r := e.mustRun(s)
	if want := cwd + "\n4321\n4322\nfrom the host\n"; r.stdout != want || r.code != 0 {
		t.Fatalf("got %+v, want stdout %q", r, want)
	}
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(cwd, "out"), &st))
	if st.Uid != uid || st.Gid != gid {
		t.Fatalf("file made inside is owned by %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
	}
}

func TestMountsReplaceTheCurrentFolderAndHonourReadOnly(t *testing.T) {
	e := newEnv(t)
	cwd, data := t.TempDir(), t.TempDir()
	must(t, os.WriteFile(filepath.Join(data, "f"), []byte("data\n"), 0o644))
	s := e.spec("sh", "-c", "cat /data/f; touch /data/g && echo wrote; ls "+cwd+" 2>/dev/null | wc -l; pwd")
	s.Cwd = cwd
	// Naming the current folder as a source takes it out of the default.
	s.Mounts = []Mount{{Source: data, Destination: "/data", ReadOnly: true}, {Source: cwd, Destination: "/work"}}
	s.Workdir = "/work"
	r := e.mustRun(s)
	if r.stdout != "data\n0\n/work\n" {
		t.Fatalf("stdout %q, want the read-only file, no write, no %s, workdir /work", r.stdout, cwd)
	}
	contains(t, r.stderr, "Read-only file system")
}

func TestStdinReachesTheCommandAndEnds(t *testing.T) {
	e := newEnv(t)
	s := e.spec("sh", "-c", "cat; echo after-eof")
	s.Stdin = strings.NewReader("hello\n")
	if r := e.mustRun(s); r.stdout != "hello\nafter-eof\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
}

func TestEnvAddsToTheImages(t *testing.T) {
	e := newEnv(t)
	s := e.spec("sh", "-c", "echo $FOO; echo $PATH")
	s.Env = []string{"FOO=bar"}
	if r := e.mustRun(s); r.stdout != "bar\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
}

func TestCommandNotFoundExits127(t *testing.T) {
	e := newEnv(t)
	r, err := e.run(e.spec("no-such-command"))
	var se *StartError
	if !errors.As(err, &se) || r.code != 127 || !strings.Contains(err.Error(), "no-such-command") {
		t.Fatalf("status %d, error %v; want 127 and a StartError naming the command", r.code, err)
	}
}

func TestSignalsAreForwarded(t *testing.T) {
	e := newEnv(t)
	sigs := make(chan os.Signal, 1)
	pr, pw := io.Pipe()
	s := e.spec("sh", "-c", "trap 'exit 42' INT; echo ready; while :; do sleep 0.1; done")
	s.Signals, s.Stdout = sigs, pw
	done := make(chan result, 1)
	go func() {
		r, err := e.run(s)
		if err != nil {
			t.Error(err)
		}
		pw.Close()
		done <- r
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("command did not start: %q %v", line, err)
	}
	go io.Copy(io.Discard, pr)
	sigs <- os.Interrupt
	if r := <-done; r.code != 42 {
		t.Fatalf("status %d, want the trap's 42", r.code)
	}
}

func TestDeathBySignalExits128PlusN(t *testing.T) {
	e := newEnv(t)
	sigs := make(chan os.Signal, 1)
	// The command is the container's PID 1, which only SIGKILL (from
	// outside) can end against its will.
	s := e.spec("sh", "-c", "sleep 300")
	s.Signals = sigs
	s.Started = func(int) { sigs <- syscall.SIGKILL }
	if r := e.mustRun(s); r.code != 128+int(syscall.SIGKILL) {
		t.Fatalf("status %d, want %d", r.code, 128+int(syscall.SIGKILL))
	}
}

func TestTerminalIsPassedThrough(t *testing.T) {
	e := newEnv(t)
	pty, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	must(t, pty.Resize(console.WinSize{Height: 33, Width: 111}))
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The terminal's reader stays blocked in read after the run (as on a
	// real terminal, where the process exits next): the descriptors are
	// left to the end of the test binary.
	var mu sync.Mutex
	var screen strings.Builder
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := pty.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	s := e.spec("sh", "-c", "tty; stty size; echo TERM=$TERM; read line; echo got:$line")
	s.TTY = slave
	s.Started = func(int) { pty.Write([]byte("typed\r")) }
	r := e.mustRun(s)
	if r.code != 0 {
		t.Fatalf("status %d", r.code)
	}
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		got = screen.String()
		mu.Unlock()
		if strings.Contains(got, "got:typed") {
			break
		}
	}
	for _, want := range []string{"/dev/pts/", "33 111", "TERM=", "got:typed"} {
		contains(t, got, want)
	}
}

func TestMissingImageWithoutRegistrySaysHowToImport(t *testing.T) {
	e := newEnv(t)
	s := e.spec("true")
	// A closed port on loopback: no registry answers.
	s.Image = "127.0.0.1:9/nothing/here:1"
	_, err := e.run(s)
	if err == nil || !strings.Contains(err.Error(), "trafficpolice images import FILE") {
		t.Fatalf("error %v, want one saying how to import an image", err)
	}
}

// TestKilledRunIsRemovedByCleanup kills -9 a process in the middle of a
// container run; Cleanup with its state folder removes the container,
// task and snapshot.
func TestKilledRunIsRemovedByCleanup(t *testing.T) {
	e := newEnv(t)
	s := e.spec("sh", "-c", "echo ready; sleep 300")
	b, _ := json.Marshal(helperSpec{Namespace: s.Namespace, Image: s.Image, ID: s.ID, NetnsPath: s.NetnsPath, StateDir: s.StateDir, Argv: s.Argv})
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not start the container: %q %v", line, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	c, err := e.client.LoadContainer(e.ctx, s.ID)
	if err != nil {
		t.Fatalf("the container should outlive the killed process until Cleanup: %v", err)
	}
	if task, err := c.Task(e.ctx, nil); err != nil {
		t.Fatalf("its task: %v", err)
	} else if st, _ := task.Status(e.ctx); st.Status != containerd.Running {
		t.Fatalf("task status %v, want running", st.Status)
	}
	must(t, Cleanup(context.Background(), s.StateDir))
	if _, err := e.client.LoadContainer(e.ctx, s.ID); !errdefs.IsNotFound(err) {
		t.Fatalf("container still there after Cleanup: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.StateDir, recordFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("record still there after Cleanup: %v", err)
	}
	// A second Cleanup has nothing to do.
	must(t, Cleanup(context.Background(), s.StateDir))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
