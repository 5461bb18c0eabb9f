package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/trafficpolice/trafficpolice/netns"
)

// A test binary that dies without its cleanups (a -timeout panic, a
// SIGKILL) leaves namespaces and temp dirs behind; its processes die with
// it (Pdeathsig). Temp dirs carry the owner's PID, so the next cluster in
// any test binary removes what a dead owner left.
var (
	clusterDirRE = regexp.MustCompile(`^tpc-([a-z0-9]{6})-p([0-9]+)-`)
	buildDirRE   = regexp.MustCompile(`^tpc-build-p([0-9]+)-`)
	sweepOnce    sync.Once
)

// clusterDirPattern is the os.MkdirTemp pattern of a cluster's temp dir.
func clusterDirPattern(prefix string) string {
	return fmt.Sprintf("%s-p%d-", prefix, os.Getpid())
}

// buildDirPattern is the os.MkdirTemp pattern of Main's build dir.
func buildDirPattern() string {
	return fmt.Sprintf("tpc-build-p%d-", os.Getpid())
}

// ownerAlive says whether pid may still be the owner: when in doubt, yes.
func ownerAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || !errors.Is(err, syscall.ESRCH)
}

// sweepStale removes the namespaces, processes and temp dirs of clusters
// whose test binary is gone. It returns what it removed and what failed.
func sweepStale() (removed []string, err error) {
	tmp := os.TempDir()
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", tmp, err)
	}
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(tmp, e.Name())
		if m := buildDirRE.FindStringSubmatch(e.Name()); m != nil {
			if pid, _ := strconv.Atoi(m[1]); !ownerAlive(pid) {
				if err := os.RemoveAll(dir); err != nil {
					errs = append(errs, err)
				} else {
					removed = append(removed, dir)
				}
			}
			continue
		}
		m := clusterDirRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[2]); ownerAlive(pid) {
			continue
		}
		names, err := removeNamespaces("tpc-" + m[1])
		removed = append(removed, names...)
		if err != nil {
			errs = append(errs, err)
			continue // keep the dir: it marks the namespaces as stale
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, dir)
		}
	}
	// Namespaces whose cluster dir is gone (removed by hand, or by a
	// cleanup that died half-way): a live cluster makes its dir before
	// its namespaces and removes it after them, so these are stale too.
	if names, err := netns.List("tpc-"); err == nil {
		seen := map[string]bool{}
		for _, name := range names {
			id, _, _ := strings.Cut(strings.TrimPrefix(name, "tpc-"), "-")
			if len(id) != 6 || seen[id] {
				continue
			}
			seen[id] = true
			if dirs, _ := filepath.Glob(filepath.Join(tmp, "tpc-"+id+"-p*")); len(dirs) > 0 {
				continue
			}
			gone, err := removeNamespaces("tpc-" + id)
			removed = append(removed, gone...)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return removed, errors.Join(errs...)
}

// removeNamespaces kills the processes left in the named namespaces of a
// cluster prefix and deletes the namespaces.
func removeNamespaces(prefix string) ([]string, error) {
	names, err := netns.List(prefix)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		if name != prefix && !strings.HasPrefix(name, prefix+"-") {
			continue
		}
		if ns, err := netns.Open(name); err == nil {
			if err := netns.KillProcesses(ns); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := netns.DeleteNamed(name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "netns "+name)
	}
	return removed, errors.Join(errs...)
}

// removeNamespace kills what is left in a cluster's namespace, then deletes it.
func removeNamespace(ns *netns.Namespace) error {
	if err := netns.KillProcesses(ns); err != nil {
		return err
	}
	return ns.Delete()
}
