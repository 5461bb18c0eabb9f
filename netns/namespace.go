package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// RunDir is where named namespaces are bind-mounted, as iproute2 does.
const RunDir = "/run/netns"

// Namespace is a named network namespace bind-mounted at RunDir/NAME.
// It holds no file descriptor: the mount keeps the namespace alive until
// Delete.
type Namespace struct {
	name string
	path string
}

// Name is the namespace's name under RunDir.
func (n *Namespace) Name() string { return n.name }

// Path is the bind mount that stands for the namespace (RunDir/NAME).
func (n *Namespace) Path() string { return n.path }

func (n *Namespace) String() string { return "netns " + n.name }

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return fmt.Errorf("netns name %q is invalid: want 1-255 characters, no '/' or NUL, not '.' or '..'", name)
	}
	return nil
}

// runDirMu serialises making RunDir a shared mount inside this process.
var runDirMu sync.Mutex

// prepareRunDir makes RunDir a shared mount point, like `ip netns add`:
// shared, so that mount namespaces copied from the host (the app's) see a
// namespace's bind mount go away when it is deleted, instead of pinning it.
func prepareRunDir() error {
	runDirMu.Lock()
	defer runDirMu.Unlock()
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", RunDir, err)
	}
	// Other trafficpolice processes (parallel test packages, say) may be
	// here at the same time: without the lock both could bind RunDir onto
	// itself, stacking two mounts.
	dir, err := unix.Open(RunDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", RunDir, err)
	}
	defer unix.Close(dir)
	if err := unix.Flock(dir, unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", RunDir, err)
	}
	defer unix.Flock(dir, unix.LOCK_UN)
	err = unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s a shared mount: %w", RunDir, err)
	}
	// EINVAL: not a mount point yet; bind it onto itself first.
	if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s onto itself: %w", RunDir, err)
	}
	if err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", RunDir, err)
	}
	return nil
}

// Create makes a new, empty network namespace and bind-mounts it at
// RunDir/name. It fails if that name is already taken.
func Create(name string) (*Namespace, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := prepareRunDir(); err != nil {
		return nil, err
	}
	path := filepath.Join(RunDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create netns %q: %s already exists (delete it with `ip netns del %s` if it is stale)", name, path, name)
		}
		return nil, fmt.Errorf("create netns %q: %w", name, err)
	}
	f.Close()

	err = onLockedThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount the new namespace at %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return nil, fmt.Errorf("create netns %q: %w", name, err)
	}
	return &Namespace{name: name, path: path}, nil
}

// Open returns the existing namespace RunDir/name.
func Open(name string) (*Namespace, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	path := filepath.Join(RunDir, name)
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, fmt.Errorf("open netns %q: %w", name, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return nil, fmt.Errorf("open netns %q: %s is not a mounted namespace (a stale file?)", name, path)
	}
	return &Namespace{name: name, path: path}, nil
}

// Delete unmounts and removes the namespace's file. The namespace itself
// goes away once no process, socket or open file (such as the TUN fd)
// holds it. Deleting a missing namespace is not an error.
func (n *Namespace) Delete() error {
	if err := unix.Unmount(n.path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %q: unmount %s: %w", n.name, n.path, err)
	}
	if err := os.Remove(n.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %q: %w", n.name, err)
	}
	return nil
}

// List returns the names under RunDir that start with prefix, sorted.
func List(prefix string) ([]string, error) {
	entries, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list netns: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Do runs fn on a locked OS thread that has entered the namespace, then
// moves the thread back. Only fn's own goroutine is inside: goroutines it
// starts are not, and neither is anything that hops threads. Child
// processes started by fn (exec.Cmd) inherit the namespace.
func (n *Namespace) Do(fn func() error) error {
	fd, err := unix.Open(n.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("enter netns %q: %w", n.name, err)
	}
	defer unix.Close(fd)
	return onLockedThread(func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns %q: %w", n.name, err)
		}
		return fn()
	})
}

// onLockedThread runs fn on a fresh goroutine locked to its OS thread and
// restores the thread's network namespace afterwards. If restoring fails
// the goroutine exits still locked, so the Go runtime discards the thread
// instead of reusing it in the wrong namespace.
func onLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("remember current netns: %w", err)
			return
		}
		defer unix.Close(orig)
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns (thread discarded): %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
