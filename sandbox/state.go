package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/sandbox/container"
)

// StateDir holds one folder per run, recording what the run created, so a
// later run can remove what a killed one left.
const StateDir = "/run/trafficpolice"

// NamespacePrefix starts the name of every sandbox namespace.
const NamespacePrefix = "tp-"

// record is what a run writes before it creates anything.
type record struct {
	ID        string    `json:"id"`
	Namespace string    `json:"namespace"`
	PID       int       `json:"pid"`
	PIDStart  uint64    `json:"pid_start"` // start time of PID, so a reused PID is not mistaken for us
	Created   time.Time `json:"created"`
}

func (r *record) dir() string { return filepath.Join(StateDir, r.ID) }

func writeRecord(r *record) error {
	if err := os.MkdirAll(r.dir(), 0o700); err != nil {
		return fmt.Errorf("create state folder: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(r.dir(), "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write run record: %w", err)
	}
	return os.Rename(tmp, filepath.Join(r.dir(), "state.json"))
}

func readRecord(dir string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &r, nil
}

// processStart is the start time of pid in clock ticks since boot
// (field 22 of /proc/PID/stat), or 0 if it is gone.
func processStart(pid int) uint64 {
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

func (r *record) alive() bool {
	if r.PID <= 0 {
		return false
	}
	if err := syscall.Kill(r.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return processStart(r.PID) == r.PIDStart
}

// teardown removes what the record says the run created: its processes,
// its namespace (with the TUN and rules inside), its state folder.
func (r *record) teardown() error {
	var errs []error
	// A container first (sandbox run --image): its processes are in the
	// namespace, and containerd must delete its task and snapshot.
	if err := container.Cleanup(context.Background(), r.dir()); err != nil {
		errs = append(errs, err)
	}
	if ns, err := netns.Open(r.Namespace); err == nil {
		if err := netns.KillProcesses(ns); err != nil {
			errs = append(errs, fmt.Errorf("kill processes in %s: %w", r.Namespace, err))
		}
		if err := ns.Delete(); err != nil {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", r.Namespace, err))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("open namespace %s: %w", r.Namespace, err))
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(r.dir()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Collect removes what runs that are no longer alive left behind (after
// kill -9, a crash, a power cut of /run does not matter). It returns the
// IDs it cleaned.
func Collect() ([]string, error) {
	entries, err := os.ReadDir(StateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", StateDir, err)
	}
	var cleaned []string
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(StateDir, e.Name())
		r, err := readRecord(dir)
		if err != nil {
			// A run killed while writing its record created nothing yet.
			if errors.Is(err, fs.ErrNotExist) {
				if info, serr := os.Stat(dir); serr == nil && time.Since(info.ModTime()) > time.Minute {
					os.RemoveAll(dir)
				}
				continue
			}
			errs = append(errs, err)
			continue
		}
		if r.alive() {
			continue
		}
		if err := r.teardown(); err != nil {
			errs = append(errs, fmt.Errorf("run %s: %w", r.ID, err))
			continue
		}
		cleaned = append(cleaned, r.ID)
	}
	return cleaned, errors.Join(errs...)
}
