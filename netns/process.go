package netns

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// killTimeout bounds how long KillProcesses waits for processes to go.
const killTimeout = 10 * time.Second

// Processes returns the PIDs whose /proc/PID/ns/net is this namespace
// (same device and inode as its bind mount), sorted. Zombies have left
// their namespaces and are not listed.
func Processes(n *Namespace) ([]int, error) {
	id, err := IDOf(n.path)
	if err != nil {
		return nil, fmt.Errorf("processes in netns %q: %w", n.name, err)
	}
	pids, err := processesIn(id)
	if err != nil {
		return nil, fmt.Errorf("processes in netns %q: %w", n.name, err)
	}
	return pids, nil
}

// ID names a network namespace by its nsfs device and inode, which stay
// valid for as long as the namespace lives, however it is held (a bind
// mount, a process, an open descriptor).
type ID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// IDOf is the ID of the namespace at path (/run/netns/NAME,
// /proc/PID/ns/net).
func IDOf(path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ID{}, err
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

func processesIn(want ID) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		// Processes come and go while we look: an error means "not ours".
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// KillProcesses sends SIGKILL to every process in the namespace (never to
// this process) and waits, bounded, until none is left. Processes that
// fork meanwhile are caught by the next round.
func KillProcesses(n *Namespace) error {
	id, err := IDOf(n.path)
	if err != nil {
		return fmt.Errorf("kill processes in netns %q: %w", n.name, err)
	}
	return KillProcessesIn(id, n.name)
}

// KillProcessesIn is KillProcesses for the namespace id, named name in
// errors: a namespace held by processes only (a rootless run's) is gone
// once they are.
func KillProcessesIn(id ID, name string) error {
	self := os.Getpid()
	deadline := time.Now().Add(killTimeout)
	for {
		pids, err := processesIn(id)
		if err != nil {
			return fmt.Errorf("kill processes in netns %q: %w", name, err)
		}
		left := pids[:0]
		for _, pid := range pids {
			if pid != self {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill processes in netns %q: still alive after %s: %v", name, killTimeout, left)
		}
		for _, pid := range left {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill pid %d in netns %q: %w", pid, name, err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
