package cluster

import (
	"fmt"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
)

// netnsDir is where named network namespaces are bind-mounted, as
// iproute2's "ip netns" does, so "ip netns exec NAME" works on them too.
const netnsDir = "/run/netns"

func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// onThreadIn runs fn on a fresh OS thread that is in the network namespace
// at path, so sockets and child processes fn creates live there. The
// calling goroutine's thread never changes namespace. If the thread cannot
// be moved back, it stays locked and Go discards it when fn's goroutine ends.
func onThreadIn(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("return from network namespace %s: %w", path, err)
			return // thread stays locked: Go drops it
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// newNamedNetns creates the network namespace /run/netns/NAME and returns
// a handle to it, without moving the calling thread.
func newNamedNetns(name string) (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{netns.None(), fmt.Errorf("get current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		// NewNamed may have moved the thread even when it failed.
		if serr := netns.Set(orig); serr != nil {
			if err == nil {
				h.Close()
				deleteNamedNetns(name)
			}
			resc <- result{netns.None(), fmt.Errorf("return from new network namespace %s: %w", name, serr)}
			return // thread stays locked: Go drops it
		}
		runtime.UnlockOSThread()
		if err != nil {
			resc <- result{netns.None(), fmt.Errorf("create network namespace %s: %w", name, err)}
			return
		}
		resc <- result{h, nil}
	}()
	r := <-resc
	return r.h, r.err
}

// deleteNamedNetns unmounts and removes /run/netns/NAME; the namespace and
// its links go away once no process is left in it.
func deleteNamedNetns(name string) error {
	if err := netns.DeleteNamed(name); err != nil {
		return fmt.Errorf("delete network namespace %s: %w", name, err)
	}
	return nil
}
