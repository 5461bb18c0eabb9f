package netnstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// User is an unprivileged user a test created, for rootless runs.
type User struct {
	Name     string
	UID, GID uint32
	Home     string
}

// NewUser creates an ordinary user (no password, no sudo, a home folder of
// its own) that is deleted when the test ends, with its processes.
func NewUser(t TB) User {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "useradd", "passwd")
	name := "tpu" + Suffix(t)
	home, err := os.MkdirTemp("", "tp-home-")
	if err != nil {
		t.Fatalf("NewUser: %v", err)
	}
	os.RemoveAll(home) // useradd -m creates it
	if out, err := exec.Command("useradd", "-m", "-d", home, "-s", "/bin/sh", "-U", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("NewUser: %v", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	nu := User{Name: name, UID: uint32(uid), GID: uint32(gid), Home: home}
	t.Cleanup(func() {
		exec.Command("pkill", "-KILL", "-U", u.Uid).Run()
		if out, err := exec.Command("userdel", "-r", "-f", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
		os.RemoveAll(home)
		// The user's trafficpolice state folder when it has no runtime one.
		os.RemoveAll(fmt.Sprintf("%s/trafficpolice-%d", os.TempDir(), uid))
	})
	return nu
}

// Command is exec.Command run as u, with u's HOME, USER and LOGNAME and
// no XDG_RUNTIME_DIR of root's.
func (u User) Command(name string, args ...string) *exec.Cmd {
	return u.CommandContext(context.Background(), name, args...)
}

// CommandContext is Command with exec.CommandContext's ctx.
func (u User) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: []uint32{u.GID}}}
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "HOME", "USER", "LOGNAME", "XDG_RUNTIME_DIR", "SUDO_UID", "SUDO_GID", "SUDO_USER":
		default:
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "HOME="+u.Home, "USER="+u.Name, "LOGNAME="+u.Name)
	cmd.Dir = u.Home
	return cmd
}

// The TUN device's mode while rootless tests run. Stock Debian and Ubuntu
// ship /dev/net/tun 0666; some machines have 0600. Test binaries of
// several packages run at once, so they share the change through a lock
// file: each holds it shared while it needs the device open to all, and
// the last one to let go restores the mode it found.
const (
	tunPath     = "/dev/net/tun"
	tunLockPath = "/run/trafficpolice-test-tun.lock"
	tunModePath = "/run/trafficpolice-test-tun.mode"
)

// TUNOpenToAll makes /dev/net/tun usable by every user (mode 0666) until
// the test ends, then restores the mode it had when no other test needs it.
func TUNOpenToAll(t TB) {
	t.Helper()
	RequireRoot(t)
	lock, err := os.OpenFile(tunLockPath, os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("TUNOpenToAll: %v", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		t.Fatalf("TUNOpenToAll: lock: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(tunPath, &st); err != nil {
		lock.Close()
		t.Fatalf("TUNOpenToAll: %v", err)
	}
	if mode := st.Mode & 0o777; mode != 0o666 {
		if _, err := os.Stat(tunModePath); os.IsNotExist(err) {
			os.WriteFile(tunModePath, []byte(fmt.Sprintf("%o", mode)), 0o600)
		}
		if err := os.Chmod(tunPath, 0o666); err != nil {
			lock.Close()
			t.Fatalf("TUNOpenToAll: %v", err)
		}
	}
	unix.Flock(int(lock.Fd()), unix.LOCK_SH)
	t.Cleanup(func() {
		defer lock.Close()
		if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			return // another test still needs it; the last one restores
		}
		b, err := os.ReadFile(tunModePath)
		if err != nil {
			return // it was 0666 before any of us
		}
		mode, err := strconv.ParseUint(strings.TrimSpace(string(b)), 8, 32)
		if err == nil {
			if err := os.Chmod(tunPath, os.FileMode(mode)); err != nil {
				t.Errorf("restore %s to %o: %v", tunPath, mode, err)
			}
		}
		os.Remove(tunModePath)
	})
}
