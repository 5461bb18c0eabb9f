package cluster

import (
	"fmt"
	"path/filepath"

	vns "github.com/vishvananda/netns"

	"github.com/trafficpolice/trafficpolice/netns"
)

// netnsDir is where named network namespaces are bind-mounted (package
// netns does it as iproute2's "ip netns" does, so "ip netns exec NAME"
// works on them too).
const netnsDir = netns.RunDir

func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// onThreadIn runs fn on an OS thread that is in the network namespace at
// path (a name under netnsDir), so sockets and child processes fn creates
// live there; see netns.Namespace.Do. The calling goroutine's thread never
// changes namespace.
func onThreadIn(path string, fn func() error) error {
	n, err := netns.Open(filepath.Base(path))
	if err != nil {
		return err
	}
	return n.Do(fn)
}

// newNamedNetns creates the network namespace /run/netns/NAME with
// package netns and returns a handle to it (for netlink), without moving
// the calling thread.
func newNamedNetns(name string) (vns.NsHandle, error) {
	n, err := netns.Create(name)
	if err != nil {
		return vns.None(), err
	}
	h, err := vns.GetFromPath(n.Path())
	if err != nil {
		n.Delete()
		return vns.None(), fmt.Errorf("open network namespace %s: %w", n.Path(), err)
	}
	return h, nil
}

// deleteNamedNetns unmounts and removes /run/netns/NAME; the namespace and
// its links go away once no process is left in it.
func deleteNamedNetns(name string) error {
	n, err := netns.Open(name)
	if err != nil {
		return fmt.Errorf("delete network namespace %s: %w", name, err)
	}
	return n.Delete()
}
