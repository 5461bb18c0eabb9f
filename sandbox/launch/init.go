package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaybeRunInit turns this process into the init helper when it was started
// as one by Start, and then never returns: it execs the app or exits. In any
// other process it returns at once. Call it first thing in main and in
// TestMain.
func MaybeRunInit() {
	if len(os.Args) > 0 && os.Args[0] == holderArg0 {
		runHolder()
	}
	if len(os.Args) == 0 || os.Args[0] != initArg0 {
		return
	}
	// One thread does everything: the namespace and credentials it gets
	// are the ones exec hands to the app.
	runtime.LockOSThread()
	serr := runInit()
	report(serr)
	code := serr.ExitCode
	if code == 0 {
		code = 125
	}
	os.Exit(code)
}

// report sends serr to Start over the error pipe; the parent may be gone.
func report(serr *StartError) {
	f := os.NewFile(errFD, "init-errors")
	b, _ := json.Marshal(serr)
	_, _ = f.Write(b)
	f.Close()
}

func fail(step string, err error, format string, args ...any) *StartError {
	se := &StartError{Step: step, Msg: fmt.Sprintf(format, args...)}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		se.Errno = errno
	}
	if err != nil {
		se.Msg += ": " + err.Error()
	}
	return se
}

// runInit returns only on failure.
func runInit() (serr *StartError) {
	defer func() {
		if r := recover(); r != nil {
			serr = fail("init", nil, "init helper panicked: %v", r)
		}
	}()
	// A successful exec closes the error pipe: that is Start's signal.
	unix.CloseOnExec(errFD)

	specFile := os.NewFile(specFD, "init-spec")
	body, err := io.ReadAll(specFile)
	specFile.Close()
	if err != nil {
		return fail("spec", err, "read the spec from the parent")
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return fail("spec", err, "decode the spec from the parent")
	}

	// Our mounts must never propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fail("mount", err, "make / a slave mount")
	}
	for _, b := range p.Binds {
		if serr := bindFile(b.Source, b.Target); serr != nil {
			return serr
		}
	}

	fd, err := unix.Open(p.NetnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("setns", err, "open %s", p.NetnsPath)
	}
	err = unix.Setns(fd, unix.CLONE_NEWNET)
	unix.Close(fd)
	if err != nil {
		return fail("setns", err, "enter network namespace %s", p.NetnsPath)
	}

	// Still root here: drop what would let the app change or leave the
	// namespace (also from the bounding set, so that a setuid program the
	// app runs cannot gain it back), then become the user, if any.
	if serr := limitCapabilities(p.Caps); serr != nil {
		return serr
	}
	if p.UID != nil || p.GID != nil {
		if serr := dropPrivileges(p); serr != nil {
			return serr
		}
	}
	// Credential changes clear the parent-death signal: arm it again, then
	// make sure the parent did not die before it was armed.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fail("parent", err, "set the parent-death signal")
	}
	if os.Getppid() != p.ParentPID {
		return fail("parent", nil, "trafficpolice (pid %d) is gone", p.ParentPID)
	}

	if p.Dir != "" {
		if err := unix.Chdir(p.Dir); err != nil {
			return fail("chdir", err, "change to %s", p.Dir)
		}
	}
	path, serr := lookPath(p.Argv[0], p.Env)
	if serr != nil {
		return serr
	}
	if err := closeExtraFDs(); err != nil {
		return fail("exec", err, "mark descriptors close-on-exec")
	}
	err = unix.Exec(path, p.Argv, p.Env)
	return execError("exec", p.Argv[0], err)
}

// bindFile bind-mounts source over target in our mount namespace. A target
// that is a symlink is followed (so the file it names is covered, as with
// `ip netns exec`); a dangling symlink is covered itself, since creating its
// target would change the host's file system.
func bindFile(source, target string) *StartError {
	fi, err := os.Stat(target)
	switch {
	case err == nil && fi.IsDir():
		return fail("mount", nil, "cannot bind %s over %s: it is a directory", source, target)
	case err == nil:
		if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
			return fail("mount", err, "bind %s over %s", source, target)
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fail("mount", err, "bind %s over %s", source, target)
	}
	li, lerr := os.Lstat(target)
	if lerr != nil || li.Mode()&os.ModeSymlink == 0 {
		return fail("mount", nil, "cannot bind %s over %s: it does not exist on this host; create it (an empty file will do) and run again", source, target)
	}
	link, err := unix.Open(target, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("mount", err, "open the dangling symlink %s", target)
	}
	defer unix.Close(link)
	if err := unix.Mount(source, fmt.Sprintf("/proc/thread-self/fd/%d", link), "", unix.MS_BIND, ""); err != nil {
		return fail("mount", err, "bind %s over the dangling symlink %s", source, target)
	}
	return nil
}

// dropPrivileges switches to the spec's groups, GID and UID, in that order
// (only root may change groups).
func dropPrivileges(p payload) *StartError {
	groups := make([]int, len(p.Groups))
	for i, g := range p.Groups {
		groups[i] = int(g)
	}
	if p.GID != nil && p.Groups == nil {
		groups = []int{int(*p.GID)}
	}
	// syscall.Setgroups applies to every thread of the process.
	if err := syscall.Setgroups(groups); err != nil {
		return fail("credentials", err, "set supplementary groups %v", groups)
	}
	if p.GID != nil {
		g := int(*p.GID)
		if err := syscall.Setresgid(g, g, g); err != nil {
			return fail("credentials", err, "set group ID %d", g)
		}
	}
	if p.UID != nil {
		u := int(*p.UID)
		if err := syscall.Setresuid(u, u, u); err != nil {
			return fail("credentials", err, "set user ID %d", u)
		}
	}
	return nil
}

// defaultPath is bash's PATH when the environment has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// lookPath finds name as a shell would: a name with a slash is used as is,
// any other is searched in env's PATH. Errors read like a shell's, with its
// exit codes (127 not found, 126 not executable).
func lookPath(name string, env []string) (string, *StartError) {
	if strings.Contains(name, "/") {
		if err := checkExecutable(name); err != nil {
			return "", execError("lookup", name, err)
		}
		return name, nil
	}
	path, ok := "", false
	for _, kv := range env {
		if v, found := strings.CutPrefix(kv, "PATH="); found {
			path, ok = v, true
		}
	}
	if !ok {
		path = defaultPath
	}
	var denied error
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		cand := dir + "/" + name
		err := checkExecutable(cand)
		if err == nil {
			return cand, nil
		}
		if denied == nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			denied = err
		}
	}
	if denied != nil {
		return "", execError("lookup", name, denied)
	}
	return "", &StartError{Step: "lookup", Msg: name + ": command not found", ExitCode: 127, Errno: unix.ENOENT}
}

// checkExecutable reports whether this thread's effective credentials may
// execute path.
func checkExecutable(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return unix.EISDIR
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return unix.EACCES
	}
	return unix.Faccessat(unix.AT_FDCWD, path, unix.X_OK, unix.AT_EACCESS)
}

// execError words a failure to run name as a shell would.
func execError(step, name string, err error) *StartError {
	se := &StartError{Step: step, ExitCode: 126}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		se.Errno = errno
		if errno == unix.ENOENT || errno == unix.ENOTDIR {
			se.ExitCode = 127
		}
	}
	se.Msg = name + ": " + err.Error()
	return se
}

// closeExtraFDs makes every descriptor but stdio close on exec: whatever
// trafficpolice itself inherited (a socket in the host's network namespace,
// say) must not reach the app. The error pipe closes with them.
func closeExtraFDs() error {
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	// Kernels before 5.11: walk /proc/self/fd.
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}
