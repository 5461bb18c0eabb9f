package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/kernelpath"
	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/procinfo"
	"github.com/trafficpolice/trafficpolice/sandbox/container"
)

// StateDir holds one folder per root run, recording what the run created,
// so a later run can remove what a killed one left. Rootless runs keep
// theirs in the user's runtime folder (UserStateDir).
const StateDir = "/run/trafficpolice"

// RunStateDir is where this process's runs keep their records: StateDir
// for root, UserStateDir for anyone else.
func RunStateDir() string { return stateDir() }

// stateDir is where this process's runs keep their records.
func stateDir() string {
	if os.Geteuid() == 0 {
		return StateDir
	}
	return UserStateDir()
}

// UserStateDir is a rootless user's state folder:
// $XDG_RUNTIME_DIR/trafficpolice, or /run/user/UID/trafficpolice (which
// root's `sandbox gc` also sweeps), or a folder of the user's in the
// temporary folder when neither exists.
func UserStateDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "trafficpolice")
	}
	run := fmt.Sprintf("/run/user/%d", os.Geteuid())
	if fi, err := os.Stat(run); err == nil && fi.IsDir() {
		return filepath.Join(run, "trafficpolice")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("trafficpolice-%d", os.Geteuid()))
}

// NamespacePrefix starts the name of every sandbox namespace.
const NamespacePrefix = "tp-"

// record is what a run writes before it creates anything.
type record struct {
	ID string `json:"id"`
	// Namespace is a root run's named namespace; "" for a rootless run.
	Namespace string `json:"namespace,omitempty"`
	// Holder is a rootless run's holder process, once started.
	Holder *heldRecord `json:"holder,omitempty"`
	// KernelPath: the run sets up a kernel path, whose host link and rules
	// are named after ID. Written with the first record, so a run killed
	// during that set-up leaves rules a later run finds; cleared once
	// they are removed.
	KernelPath bool `json:"kernel_path,omitempty"`
	// Base is the state folder the record lives in.
	Base     string    `json:"-"`
	PID      int       `json:"pid"`
	PIDStart uint64    `json:"pid_start"` // start time of PID, so a reused PID is not mistaken for us
	Created  time.Time `json:"created"`
}

// heldRecord is a rootless run's holder: its namespaces live as long as
// it and the processes the app left in them.
type heldRecord struct {
	PID      int      `json:"pid"`
	PIDStart uint64   `json:"pid_start"`
	Netns    netns.ID `json:"netns"`
}

func (r *record) dir() string { return filepath.Join(r.Base, r.ID) }

func writeRecord(r *record) error {
	if err := os.MkdirAll(r.Base, 0o700); err != nil {
		return fmt.Errorf("create state folder: %w", err)
	}
	// A user's folder may be in the shared temporary folder: it must be
	// theirs, not one another user made for them.
	var st syscall.Stat_t
	if err := syscall.Lstat(r.Base, &st); err != nil {
		return fmt.Errorf("state folder: %w", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("state folder %s is not a folder of uid %d's own: remove it, or set XDG_RUNTIME_DIR", r.Base, os.Geteuid())
	}
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
	r.Base = filepath.Dir(dir)
	return &r, nil
}

// processStart is procinfo.StartTime.
func processStart(pid int) uint64 { return procinfo.StartTime(pid) }

func (r *record) alive() bool { return procinfo.Alive(r.PID, r.PIDStart) }

// teardown removes what the record says the run created: its processes,
// its namespace (with the TUN and rules inside), its state folder.
func (r *record) teardown() error {
	var errs []error
	// A container first (sandbox run --image): its processes are in the
	// namespace, and containerd must delete its task and snapshot.
	if err := container.Cleanup(context.Background(), r.dir()); err != nil {
		errs = append(errs, err)
	}
	if h := r.Holder; h != nil {
		if processStart(h.PID) == h.PIDStart {
			syscall.Kill(h.PID, syscall.SIGKILL)
		}
		// What the app left behind keeps the namespace alive.
		if err := netns.KillProcessesIn(h.Netns, "of rootless run "+r.ID); err != nil {
			errs = append(errs, err)
		}
	}
	if r.Namespace == "" {
		// A rootless run: no named namespace.
	} else if ns, err := netns.Open(r.Namespace); err == nil {
		if err := netns.KillProcesses(ns); err != nil {
			errs = append(errs, fmt.Errorf("kill processes in %s: %w", r.Namespace, err))
		}
		if err := ns.Delete(); err != nil {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", r.Namespace, err))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		// A run killed between creating the namespace's file and mounting
		// it leaves a plain file (and maybe its link): nothing lives in
		// it, and it only needs removing.
		if derr := netns.DeleteNamed(r.Namespace); derr != nil {
			errs = append(errs, fmt.Errorf("open namespace %s: %w; remove what is left: %w", r.Namespace, err, derr))
		}
	}
	if r.KernelPath {
		if err := kernelpath.RemoveLeftovers(r.ID); err != nil {
			errs = append(errs, err)
		}
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
//
// Root sweeps its own folder and every user's runtime folder (rootless
// runs); a user sweeps their own.
func Collect() ([]string, error) {
	bases := []string{stateDir()}
	if os.Geteuid() == 0 {
		users, _ := filepath.Glob("/run/user/*/trafficpolice")
		tmp, _ := filepath.Glob(filepath.Join(os.TempDir(), "trafficpolice-*"))
		bases = append(append(bases, users...), tmp...)
	}
	var cleaned []string
	var errs []error
	for _, base := range bases {
		c, err := collectIn(base)
		cleaned = append(cleaned, c...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return cleaned, errors.Join(errs...)
}

func collectIn(base string) ([]string, error) {
	entries, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", base, err)
	}
	var cleaned []string
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(base, e.Name())
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
