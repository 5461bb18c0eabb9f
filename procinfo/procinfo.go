// Package procinfo tells whether the process a record names is still the
// one that wrote it: a PID alone may have been reused since.
package procinfo

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// StartTime is the start time of pid in clock ticks since boot (field 22
// of /proc/PID/stat), or 0 if it is gone.
func StartTime(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces and parentheses: split after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(fields[19], 10, 64)
	return v
}

// Alive says whether pid runs and is the process that started at start.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return StartTime(pid) == start
}
