package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeProc writes /proc/PID/stat (and environ) files for the given
// processes: pid → ppid, start time, comm.
func fakeProc(t *testing.T, procs map[int][3]any) string {
	t.Helper()
	root := t.TempDir()
	for pid, p := range procs {
		dir := filepath.Join(root, fmt.Sprint(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// Fields 3..22 of stat; the name holds a space and a ')' on purpose.
		rest := fmt.Sprintf("S %d 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 %d 1000 10", p[0], p[1])
		stat := fmt.Sprintf("%d (%s) %s\n", pid, p[2], rest)
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		env := fmt.Sprintf("WHO=%d\x00", pid)
		if err := os.WriteFile(filepath.Join(dir, "environ"), []byte(env), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "self"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestOldestOtherProcessSkipsTheAgentAndItsAncestors(t *testing.T) {
	self := os.Getpid()
	parent := self + 1000000 // not a real process here: the fake tree says it is our parent
	root := fakeProc(t, map[int][3]any{
		parent: {0, 1, "sh"},                // started first, but the agent's ancestor
		7:      {0, 50, "odd) name"},        // the target
		self:   {parent, 100, "trafficpol"}, // the agent
		9:      {7, 60, "child"},
	})
	pid, err := oldestOtherProcess(root)
	if err != nil || pid != 7 {
		t.Fatalf("oldestOtherProcess = %d, %v; want 7", pid, err)
	}
	s, err := New(Options{Token: "x", ProcRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	vars, got, err := s.targetEnv()
	if err != nil || got != 7 || !reflect.DeepEqual(vars, []string{"WHO=7"}) {
		t.Errorf("targetEnv = %q, %d, %v; want WHO=7 of pid 7", vars, got, err)
	}
	s.opts.TargetPID = 9
	if vars, got, err := s.targetEnv(); err != nil || got != 9 || !reflect.DeepEqual(vars, []string{"WHO=9"}) {
		t.Errorf("targetEnv with TargetPID 9 = %q, %d, %v", vars, got, err)
	}
}

func TestOldestOtherProcessAlone(t *testing.T) {
	root := fakeProc(t, map[int][3]any{os.Getpid(): {0, 1, "agent"}})
	if _, err := oldestOtherProcess(root); err == nil || !strings.Contains(err.Error(), "--target-pid") {
		t.Errorf("only the agent: %v, want an error pointing at --target-pid", err)
	}
}

func TestSplitEnvironDropsWhatIsNotKeyValue(t *testing.T) {
	got := splitEnviron([]byte("A=1\x00junk\x00=x\x00B=\x00\x00C=a=b\x00"))
	if want := []string{"A=1", "B=", "C=a=b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("splitEnviron = %q, want %q", got, want)
	}
}

func TestNewRejectsANegativeTargetPID(t *testing.T) {
	if _, err := New(Options{Token: "x", TargetPID: -3}); err == nil || !strings.Contains(err.Error(), "TargetPID -3") {
		t.Errorf("TargetPID -3: %v", err)
	}
}
