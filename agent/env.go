package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// serveEnv answers an Env request with the target process's environment.
func (s *Server) serveEnv(t *tunnel, st *mux.Stream) {
	defer st.Close()
	res := proto.Result{}
	vars, pid, err := s.targetEnv()
	if err == nil {
		res.Data, err = proto.EncodeEnv(vars)
	}
	if err != nil {
		t.log.Warn("could not read the target's environment", "err", err)
		res = proto.Result{Class: proto.ClassOther, Message: err.Error()}
	} else {
		t.log.Debug("sent the target's environment", "pid", pid, "variables", len(vars))
	}
	_ = proto.WriteMessage(st, res)
}

// targetEnv reads the environment of Options.TargetPID, or of the oldest
// other process the agent sees when it is zero.
func (s *Server) targetEnv() ([]string, int, error) {
	pid := s.opts.TargetPID
	if pid == 0 {
		var err error
		if pid, err = oldestOtherProcess(s.opts.ProcRoot); err != nil {
			return nil, 0, err
		}
	}
	b, err := os.ReadFile(filepath.Join(s.opts.ProcRoot, strconv.Itoa(pid), "environ"))
	if err != nil {
		return nil, pid, fmt.Errorf("read the environment of the target process %d: %w", pid, err)
	}
	return splitEnviron(b), pid, nil
}

// splitEnviron splits /proc/PID/environ, dropping what is not KEY=VALUE
// (a process may overwrite its own environ area with anything).
func splitEnviron(b []byte) []string {
	var out []string
	for _, e := range bytes.Split(b, []byte{0}) {
		if i := bytes.IndexByte(e, '='); i > 0 {
			out = append(out, string(e))
		}
	}
	return out
}

// oldestOtherProcess is the process that started first among those in
// procRoot, leaving out the agent and its ancestors. In an ephemeral
// container, which shares the target container's PID namespace, that is
// the target's own first process (usually PID 1).
func oldestOtherProcess(procRoot string) (int, error) {
	self := os.Getpid()
	skip := map[int]bool{self: true}
	// Ancestors (a shell or init that started the agent) are not the target.
	for pid := self; pid > 1; {
		ppid, _, err := procStat(procRoot, pid)
		if err != nil || ppid <= 0 || skip[ppid] {
			break
		}
		skip[ppid] = true
		pid = ppid
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return 0, fmt.Errorf("list processes in %s: %w", procRoot, err)
	}
	best, bestStart := 0, uint64(0)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 || skip[pid] {
			continue
		}
		_, start, err := procStat(procRoot, pid)
		if err != nil {
			continue // gone meanwhile
		}
		if best == 0 || start < bestStart || (start == bestStart && pid < best) {
			best, bestStart = pid, start
		}
	}
	if best == 0 {
		return 0, errors.New("no process besides the agent is visible: start the agent with --target-pid, or in the target container's PID namespace")
	}
	return best, nil
}

// procStat returns a process's parent PID and start time (clock ticks
// since boot) from /proc/PID/stat.
func procStat(procRoot string, pid int) (ppid int, start uint64, err error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold spaces and ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("%s/%d/stat has no command name", procRoot, pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, starttime field 22.
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("%s/%d/stat has %d fields after the name, want at least 20", procRoot, pid, len(f))
	}
	if ppid, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, fmt.Errorf("%s/%d/stat: ppid %q: %w", procRoot, pid, f[1], err)
	}
	if start, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("%s/%d/stat: starttime %q: %w", procRoot, pid, f[19], err)
	}
	return ppid, start, nil
}
