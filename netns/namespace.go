package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Dir holds the bind mounts that keep trafficpolice's named namespaces
// alive. It is a shared mount of its own that only this package mounts
// under, so no other tool's mounts are ever covered by it, and no other
// tool's bind mount of /run/netns onto itself (iproute2 makes one when
// /run/netns is not yet a mount point) can cover ours.
const Dir = "/run/trafficpolice-netns"

// LinkDir is iproute2's folder of named namespaces. Each of ours gets a
// symlink there, so `ip netns exec NAME` and `nsenter --net=LinkDir/NAME`
// work for debugging. Nothing is ever mounted there by this package: other
// tools (containerd's CRI, vishvananda/netns' NewNamed) bind-mount their
// namespaces onto files in it, and those mounts must stay theirs to remove.
const LinkDir = "/run/netns"

// maxStacked bounds how many mounts Delete takes off one path.
const maxStacked = 16

// Namespace is a named network namespace. It holds no file descriptor:
// the bind mount at Path keeps the namespace alive until Delete.
type Namespace struct {
	name string
	path string // the bind mount: Dir/NAME, or LinkDir/NAME for one we did not make
	link string // LinkDir/NAME when it is our symlink to path, else ""
}

// Name is the namespace's name, as `ip netns` shows it.
func (n *Namespace) Name() string { return n.name }

// Path is the bind mount that stands for the namespace (Dir/NAME for the
// ones Create made), for setns or nsenter --net=PATH.
func (n *Namespace) Path() string { return n.path }

func (n *Namespace) String() string { return "netns " + n.name }

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return fmt.Errorf("netns name %q is invalid: want 1-255 characters, no '/' or NUL, not '.' or '..'", name)
	}
	return nil
}

// dirMu serialises preparing Dir inside this process; a flock on Dir does
// it between processes.
var dirMu sync.Mutex

// prepareDir makes Dir a shared mount point of its own (once per boot, or
// per mount namespace), so that mount namespaces copied from this one (the
// app's, which is a slave of it) lose a namespace's bind mount when Delete
// unmounts it, instead of pinning the namespace.
func prepareDir() error {
	dirMu.Lock()
	defer dirMu.Unlock()
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", Dir, err)
	}
	dir, err := unix.Open(Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", Dir, err)
	}
	defer unix.Close(dir)
	// Other trafficpolice processes (parallel test packages, say) may be
	// here at the same time: without the lock both could bind Dir onto
	// itself, the second covering what the first mounted under it.
	if err := unix.Flock(dir, unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", Dir, err)
	}
	defer unix.Flock(dir, unix.LOCK_UN)

	mounted, err := mountinfo.Mounted(Dir)
	if err != nil {
		return fmt.Errorf("is %s a mount point: %w", Dir, err)
	}
	if mounted {
		if err := unix.Mount("", Dir, "none", unix.MS_SHARED, ""); err != nil {
			return fmt.Errorf("make %s a shared mount: %w", Dir, err)
		}
		return nil
	}
	// A bind of Dir onto itself would cover whatever is mounted under it.
	// Nothing should be (only this package mounts there, and always after
	// this step), but if something is, leave Dir as it is: our mounts then
	// share the parent mount's propagation, which works, only less tidily.
	resolved, err := filepath.EvalSymlinks(Dir)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", Dir, err)
	}
	under, err := mountinfo.GetMounts(mountinfo.PrefixFilter(resolved))
	if err != nil {
		return fmt.Errorf("list mounts under %s: %w", Dir, err)
	}
	if len(under) > 0 {
		return nil
	}
	if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s onto itself: %w", Dir, err)
	}
	// Private first: a bind of a shared parent (/run under systemd) would
	// join the parent's peer group, and every mount under Dir would then
	// be copied, hidden, under the bind in the parent as well.
	if err := unix.Mount("", Dir, "none", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s a private mount: %w", Dir, err)
	}
	if err := unix.Mount("", Dir, "none", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", Dir, err)
	}
	return nil
}

// Create makes a new, empty network namespace, bind-mounts it at
// Dir/name and links LinkDir/name to it. It fails if iproute2 or
// trafficpolice already has a namespace of that name.
func Create(name string) (*Namespace, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := prepareDir(); err != nil {
		return nil, fmt.Errorf("create netns %q: %w", name, err)
	}
	n := &Namespace{name: name, path: filepath.Join(Dir, name), link: filepath.Join(LinkDir, name)}
	if _, err := os.Lstat(n.link); err == nil {
		return nil, fmt.Errorf("create netns %q: %s already exists (delete it with `ip netns del %s` if it is stale)", name, n.link, name)
	}
	f, err := os.OpenFile(n.path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create netns %q: %s already exists (remove it with `umount -l %[2]s; rm %[2]s` if it is stale)", name, n.path)
		}
		return nil, fmt.Errorf("create netns %q: %w", name, err)
	}
	f.Close()

	err = onLockedThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", n.path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount the new namespace at %s: %w", n.path, err)
		}
		return nil
	})
	if err == nil {
		err = n.addLink()
	}
	if err != nil {
		_ = unix.Unmount(n.path, unix.MNT_DETACH)
		_ = os.Remove(n.path)
		return nil, fmt.Errorf("create netns %q: %w", name, err)
	}
	return n, nil
}

// addLink makes LinkDir/NAME a symlink to the namespace, for `ip netns`.
func (n *Namespace) addLink() error {
	if err := os.MkdirAll(LinkDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", LinkDir, err)
	}
	if err := os.Symlink(n.path, n.link); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s was taken meanwhile by another tool", n.link)
		}
		return fmt.Errorf("link %s to %s: %w", n.link, n.path, err)
	}
	return nil
}

// Open returns the existing namespace name: one that Create made, else
// the one `ip netns` knows by that name (made by iproute2, by another
// tool, or by an earlier trafficpolice that mounted its namespaces there).
func Open(name string) (*Namespace, error) {
	n, err := lookup(name)
	if err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(n.path, &st); err != nil {
		return nil, fmt.Errorf("open netns %q: %w", name, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return nil, fmt.Errorf("open netns %q: %s is not a mounted namespace (a stale file?)", name, n.path)
	}
	return n, nil
}

// lookup finds where the namespace name is, or would be.
func lookup(name string) (*Namespace, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	n := &Namespace{name: name, path: filepath.Join(Dir, name), link: filepath.Join(LinkDir, name)}
	if _, err := os.Lstat(n.path); errors.Is(err, fs.ErrNotExist) {
		n.path, n.link = n.link, ""
	}
	return n, nil
}

// DeleteNamed deletes what is left of the namespace name, also when Open
// cannot open it (a file whose mount `ip netns del` removed, a symlink to
// nothing). Deleting a missing namespace is not an error.
func DeleteNamed(name string) error {
	n, err := lookup(name)
	if err != nil {
		return err
	}
	return n.Delete()
}

// Delete removes the namespace's name: its symlink in LinkDir, its bind
// mount and its file. The namespace itself goes away once no process,
// socket or open file (such as the TUN fd) holds it. Deleting a missing
// namespace is not an error.
func (n *Namespace) Delete() error {
	// The link first: if we die half-way, Open still finds the mount.
	if err := n.removeLink(); err != nil {
		return fmt.Errorf("delete netns %q: %w", n.name, err)
	}
	// MNT_DETACH, so that a namespace still in use does not make it fail;
	// in a loop, in case someone mounted over ours. EINVAL: nothing (more)
	// is mounted there.
	for i := 0; ; i++ {
		err := unix.Unmount(n.path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("delete netns %q: unmount %s: %w", n.name, n.path, err)
		}
		if i == maxStacked {
			return fmt.Errorf("delete netns %q: %s still mounted after %d unmounts", n.name, n.path, maxStacked)
		}
	}
	err := os.Remove(n.path)
	switch {
	case err == nil, errors.Is(err, os.ErrNotExist):
		return nil
	case errors.Is(err, unix.EBUSY):
		// Only for a namespace in LinkDir: a bind mount of LinkDir onto
		// itself, made after the namespace, hides its first mount.
		return fmt.Errorf("delete netns %q: %w: a mount of it is hidden under a later bind mount of %s onto itself (see `grep %s /proc/self/mountinfo`); it goes away at reboot", n.name, err, filepath.Dir(n.path), n.name)
	default:
		return fmt.Errorf("delete netns %q: %w", n.name, err)
	}
}

// removeLink removes LinkDir/NAME if it is still our symlink: after `ip
// netns del NAME` the name may belong to someone else.
func (n *Namespace) removeLink() error {
	if n.link == "" {
		return nil
	}
	target, err := os.Readlink(n.link)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil || target != n.path {
		return nil // not a symlink, or not to us: not ours to remove
	}
	if err := os.Remove(n.link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", n.link, err)
	}
	return nil
}

// List returns the names of the namespaces that start with prefix, sorted:
// those Create made and those `ip netns list` shows.
func List(prefix string) ([]string, error) {
	seen := map[string]bool{}
	for _, dir := range []string{Dir, LinkDir} {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list netns: %w", err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				seen[e.Name()] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for name := range seen {
		names = append(names, name)
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
