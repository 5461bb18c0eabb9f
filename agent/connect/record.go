package connect

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/kube"
	"github.com/trafficpolice/trafficpolice/procinfo"
)

// A run records what it creates in the cluster before creating it, in a
// file of the state folder (Options.StateDir), and removes the file once
// its agent's objects are gone. A run killed at any moment — a Job still
// Pending after the CLI died included — leaves the file, and the next run
// or `sandbox gc` deletes what it names (CollectStale).

// clusterRecordPrefix starts the name of a run's cluster record.
const clusterRecordPrefix = "cluster-"

// clusterRecord is what a run created in a cluster.
type clusterRecord struct {
	PID      int    `json:"pid"`
	PIDStart uint64 `json:"pid_start"`
	// Kubeconfig and Context reach the cluster again (Kubeconfig "" means
	// the default loading rules of whoever collects).
	Kubeconfig string          `json:"kubeconfig,omitempty"`
	Context    string          `json:"context,omitempty"`
	Objects    []clusterObject `json:"objects"`
	Created    time.Time       `json:"created"`

	path string
	mu   sync.Mutex
}

type clusterObject struct {
	Kind      string `json:"kind"` // secret, job
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// newClusterRecord names a record for this process in dir; nothing is
// written before the first object.
// kubeconfig is the file the run's configuration came from (a run under
// $KUBECONFIG is collected by whoever runs gc with another environment).
func newClusterRecord(dir string, kubeconfig string, context string) (*clusterRecord, error) {
	if dir == "" {
		return nil, nil
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("random record name: %w", err)
	}
	pid := os.Getpid()
	return &clusterRecord{
		PID: pid, PIDStart: procinfo.StartTime(pid), Kubeconfig: kubeconfig, Context: context, Created: time.Now(),
		path: filepath.Join(dir, clusterRecordPrefix+hex.EncodeToString(b)+".json"),
	}, nil
}

// add records an object, before it is created.
func (r *clusterRecord) add(kind, namespace, name string) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Objects = append(r.Objects, clusterObject{Kind: kind, Namespace: namespace, Name: name})
	return r.writeLocked()
}

// forget unrecords an object the run did not create after all (another
// run's shared agent won the create): gc must not take it for this run's.
func (r *clusterRecord) forget(kind, namespace, name string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Objects = slices.DeleteFunc(r.Objects, func(o clusterObject) bool {
		return o == clusterObject{Kind: kind, Namespace: namespace, Name: name}
	})
	if len(r.Objects) == 0 {
		os.Remove(r.path)
		return
	}
	_ = r.writeLocked() // at worst gc asks about an object that is not ours, and keeps it while it runs
}

// cleanUp deletes what the record names and, once that is done, the
// record: after a start that failed (whose own removal may or may not have
// worked), so that nothing waits for a gc.
func (r *clusterRecord) cleanUp(ctx context.Context, access *kube.Access) {
	if r == nil {
		return
	}
	r.mu.Lock()
	objs := slices.Clone(r.Objects)
	r.mu.Unlock()
	if _, err := deleteObjects(ctx, access, objs); err == nil {
		r.remove() // else it stays for CollectStale
	}
}

// deleteObjects deletes recorded objects, the newest first (a Job before
// the Secret it was given), within 20 s, and returns those it removed
// ("job ns/name"); a shared agent's that other runs still use are kept.
func deleteObjects(ctx context.Context, access *kube.Access, objs []clusterObject) (removed []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, o := range slices.Backward(objs) {
		deleted, derr := access.DeleteAgentObjects(ctx, o.Kind, o.Namespace, o.Name)
		if derr != nil {
			err = errors.Join(err, derr)
			continue
		}
		if deleted {
			removed = append(removed, fmt.Sprintf("%s %s/%s", o.Kind, o.Namespace, o.Name))
		}
	}
	return removed, err
}

// writeLocked writes the record, atomically.
func (r *clusterRecord) writeLocked() error {
	if err := os.MkdirAll(filepath.Dir(r.path), 0o700); err != nil {
		return fmt.Errorf("record the cluster objects: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := r.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("record the cluster objects: %w", err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		return fmt.Errorf("record the cluster objects: %w", err)
	}
	return nil
}

// remove deletes the record once its objects are gone.
func (r *clusterRecord) remove() {
	if r != nil {
		os.Remove(r.path)
	}
}

// CollectStale deletes what runs that are no longer alive created in
// their clusters, as their records in stateDir say, and returns what it
// removed ("job ns/name"). A cluster that cannot be reached keeps its
// record for a later try; the error says which.
func CollectStale(ctx context.Context, stateDir string) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(stateDir, clusterRecordPrefix+"*.json"))
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		var r clusterRecord
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		if procinfo.Alive(r.PID, r.PIDStart) {
			continue
		}
		access, err := kube.Connect(kube.AccessOptions{Kubeconfig: r.Kubeconfig, Context: r.Context})
		if err != nil {
			errs = append(errs, fmt.Errorf("objects of a killed run (%s): %w", p, err))
			continue
		}
		gone, failed := deleteObjects(ctx, access, r.Objects)
		removed = append(removed, gone...)
		if failed != nil {
			errs = append(errs, fmt.Errorf("objects of a killed run (context %q): %w", r.Context, failed))
			continue
		}
		os.Remove(p)
	}
	return removed, errors.Join(errs...)
}
