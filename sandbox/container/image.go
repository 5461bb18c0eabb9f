package container

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/distribution/reference"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/images/registry"
)

// normalizeRef names ref as containerd stores it (busybox → docker.io/library/busybox:latest).
func normalizeRef(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("--image %q is invalid (%v): want an image reference such as localhost/trafficpolice/busybox:1", ref, err)
	}
	return reference.TagNameOnly(named).String(), nil
}

// ensureImage returns the image, pulled if containerd does not have it, and
// unpacked for the snapshotter.
func ensureImage(ctx context.Context, client *containerd.Client, ref, namespace string, progress io.Writer) (containerd.Image, error) {
	name, err := normalizeRef(ref)
	if err != nil {
		return nil, err
	}
	img, err := client.GetImage(ctx, name)
	if errdefs.IsNotFound(err) {
		img, err = pull(ctx, client, name, namespace, progress)
	}
	if err != nil {
		return nil, err
	}
	unpacked, err := img.IsUnpacked(ctx, containerd.DefaultSnapshotter)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	if !unpacked {
		if err := img.Unpack(ctx, containerd.DefaultSnapshotter); err != nil {
			return nil, fmt.Errorf("unpack image %s: %w", name, err)
		}
	}
	return img, nil
}

// pull fetches name from its registry, drawing a progress bar on a terminal
// and a line at start and end otherwise.
func pull(ctx context.Context, client *containerd.Client, name, namespace string, progress io.Writer) (containerd.Image, error) {
	bar := newPullBar(progress, name)
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			statuses, err := client.ContentStore().ListStatuses(pctx)
			if err != nil {
				continue
			}
			var done, total int64
			for _, s := range statuses {
				done += s.Offset
				total += s.Total
			}
			bar.update(done, total)
		}
	}()
	// The user's registry credentials, as `docker login` stored them, the
	// same that `trafficpolice images push` uses.
	resolver := docker.NewResolver(docker.ResolverOptions{Credentials: registry.Credentials})
	img, err := client.Pull(ctx, name, containerd.WithResolver(resolver), containerd.WithPullUnpack, containerd.WithPullSnapshotter(containerd.DefaultSnapshotter))
	stop()
	wg.Wait()
	bar.finish(err)
	if err != nil && refused(err) {
		host := name
		if named, perr := reference.ParseNormalizedNamed(name); perr == nil {
			host = reference.Domain(named)
		}
		return nil, fmt.Errorf("image %s is not in containerd (namespace %s) and registry %s refused to let us pull it: %w\n"+
			"Log in with `docker login %s` (trafficpolice reads the credentials from %s and its credential helpers), "+
			"or import the image from an OCI archive: `trafficpolice images import FILE`", name, namespace, host, err, host, registry.ConfigSource())
	}
	if err != nil {
		return nil, fmt.Errorf("image %s is not in containerd (namespace %s) and pulling it failed: %w\n"+
			"With no registry in reach, import the image from an OCI archive instead: "+
			"`trafficpolice images import FILE` (for example after `trafficpolice images build busybox -o busybox.tar`), "+
			"or `ctr -n %s images import FILE`", name, namespace, err, namespace)
	}
	return img, nil
}

// refused says whether a pull failed on the registry's refusal of our
// credentials (containerd gives the status only in its message).
func refused(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "401 Unauthorized") || strings.Contains(msg, "403 Forbidden")
}

type pullBar struct {
	w    io.Writer
	name string
	tty  bool
	last time.Time
}

func newPullBar(w io.Writer, name string) *pullBar {
	b := &pullBar{w: w, name: name}
	if w == nil {
		return b
	}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		b.tty = err == nil
	}
	if !b.tty {
		fmt.Fprintf(w, "  pulling %s\n", name)
	}
	return b
}

func (b *pullBar) update(done, total int64) {
	if b.w == nil || !b.tty || total == 0 {
		return
	}
	const width = 30
	n := int(done * width / total)
	if n > width {
		n = width
	}
	fmt.Fprintf(b.w, "\r\033[K  pulling %s [%s%s] %s / %s", b.name, strings.Repeat("=", n), strings.Repeat(" ", width-n), mib(done), mib(total))
}

func (b *pullBar) finish(err error) {
	if b.w == nil {
		return
	}
	prefix := ""
	if b.tty {
		prefix = "\r\033[K"
	}
	if err != nil {
		fmt.Fprintf(b.w, "%s✗ pull %s failed\n", prefix, b.name)
		return
	}
	fmt.Fprintf(b.w, "%s✓ pulled %s\n", prefix, b.name)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
