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
	var want unix.Stat_t
	if err := unix.Stat(n.path, &want); err != nil {
		return nil, fmt.Errorf("processes in netns %q: %w", n.name, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("processes in netns %q: %w", n.name, err)
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
	self := os.Getpid()
	deadline := time.Now().Add(killTimeout)
	for {
		pids, err := Processes(n)
		if err != nil {
			return err
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
			return fmt.Errorf("kill processes in netns %q: still alive after %s: %v", n.name, killTimeout, left)
		}
		for _, pid := range left {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill pid %d in netns %q: %w", pid, n.name, err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
