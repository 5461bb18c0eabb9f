package container

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

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
)

// recordFile is written into the run's state folder before the container
// is created, so that whatever exists can be found after a kill -9.
const recordFile = "container.json"

type record struct {
	Address   string `json:"address"`
	Namespace string `json:"namespace"`
	ID        string `json:"id"`
}

func writeRecord(dir string, r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, recordFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("record the container: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, recordFile)); err != nil {
		return fmt.Errorf("record the container: %w", err)
	}
	return nil
}

// Cleanup removes the container (its task and snapshot too) that a run
// recorded in its state folder dir, if any; a folder without a record is
// left as it is. It fails, keeping the record for a later try, when
// containerd cannot be reached.
func Cleanup(ctx context.Context, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the container record: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("container record %s: %w", filepath.Join(dir, recordFile), err)
	}
	client, err := Connect(ctx, r.Address)
	if err != nil {
		return fmt.Errorf("remove container %s: %w", r.ID, err)
	}
	defer client.Close()
	if err := remove(namespaces.WithNamespace(ctx, r.Namespace), client, r.ID); err != nil {
		return err
	}
	return os.Remove(filepath.Join(dir, recordFile))
}

// remove kills and deletes the container's task, then the container and
// its snapshot. Whatever is already gone is fine.
func remove(ctx context.Context, client *containerd.Client, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	c, err := client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		// Created snapshot, failed container: the snapshot carries the id.
		err := client.SnapshotService(containerd.DefaultSnapshotter).Remove(ctx, id)
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove snapshot %s: %w", id, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("load container %s: %w", id, err)
	}
	if task, err := c.Task(ctx, nil); err == nil {
		_ = task.Kill(ctx, syscall.SIGKILL)
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete the task of container %s: %w", id, err)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("task of container %s: %w", id, err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	return nil
}
