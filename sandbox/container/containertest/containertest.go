// Package containertest gives tests a real containerd to run containers
// in: a check that the daemon answers (failing under CI=true, which starts
// one), the busybox test image, and a containerd namespace of the test's
// own that is removed, image and all, when the test ends.
//
// It is for tests only, and must not start or stop the daemon.
package containertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"

	tpimages "github.com/trafficpolice/trafficpolice/images"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// Address is the daemon's socket: $CONTAINERD_ADDRESS or the default.
func Address() string {
	if a := os.Getenv("CONTAINERD_ADDRESS"); a != "" {
		return a
	}
	return "/run/containerd/containerd.sock"
}

// NeedDaemon returns a client of the containerd daemon, closed when the
// test ends. Without root or a daemon the test fails under CI=true and is
// skipped elsewhere.
func NeedDaemon(t testing.TB) *containerd.Client {
	t.Helper()
	miss := ""
	var client *containerd.Client
	if os.Geteuid() != 0 {
		miss = "root"
	} else if _, err := os.Stat(Address()); err != nil {
		miss = fmt.Sprintf("a containerd daemon at %s (.ci/containerd.sh start)", Address())
	} else {
		c, err := containerd.New(Address(), containerd.WithTimeout(5*time.Second))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = c.Version(ctx)
			cancel()
			if err != nil {
				c.Close()
			}
		}
		if err != nil {
			miss = fmt.Sprintf("a containerd daemon at %s: %v", Address(), err)
		} else {
			client = c
		}
	}
	netnstest.Need(t, miss == "", "this test needs %s", miss)
	t.Cleanup(func() { client.Close() })
	return client
}

// BusyboxArchive builds the busybox test image (tpimages.BusyboxRef) from
// Debian's busybox-static into the test's temporary folder and returns the
// archive's path.
func BusyboxArchive(t testing.TB) string {
	t.Helper()
	r, err := tpimages.Busybox("/bin/busybox", tpimages.BusyboxRef)
	if err != nil {
		t.Fatalf("%v (apt-get install busybox-static)", err)
	}
	file := filepath.Join(t.TempDir(), "busybox.tar")
	if _, err := tpimages.WriteFile(file, r); err != nil {
		t.Fatal(err)
	}
	return file
}

// Namespace makes a containerd namespace for this test alone, imports the
// archives into it (ready to run), and removes its images and itself when
// the test ends. Cleanups registered later run first, so containers the
// test makes are gone by then.
func Namespace(t testing.TB, client *containerd.Client, archives ...string) string {
	t.Helper()
	ns := "tpt-" + netnstest.Suffix(t)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	t.Cleanup(func() {
		if err := RemoveNamespace(ctx, client, ns); err != nil {
			t.Error(err)
		}
	})
	for _, a := range archives {
		f, err := os.Open(a)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tpimages.Import(ctx, client, ns, containerd.DefaultSnapshotter, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

// RemoveNamespace deletes a containerd namespace: it must hold no
// container any more; its images go, and their content and snapshots with
// the synchronous garbage collection.
func RemoveNamespace(ctx context.Context, client *containerd.Client, ns string) error {
	ctx = namespaces.WithNamespace(ctx, ns)
	if cs, err := client.Containers(ctx); err != nil {
		return err
	} else if len(cs) > 0 {
		return fmt.Errorf("containerd namespace %s still holds %d container(s), e.g. %s", ns, len(cs), cs[0].ID())
	}
	is := client.ImageService()
	imgs, err := is.List(ctx)
	if err != nil {
		return err
	}
	for i, img := range imgs {
		var opts []images.DeleteOpt
		if i == len(imgs)-1 {
			opts = append(opts, images.SynchronousDelete())
		}
		if err := is.Delete(ctx, img.Name, opts...); err != nil {
			return fmt.Errorf("delete image %s: %w", img.Name, err)
		}
	}
	var err2 error
	for i := 0; i < 50; i++ {
		if err2 = client.NamespaceService().Delete(ctx, ns); err2 == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("delete containerd namespace %s: %w", ns, err2)
}
