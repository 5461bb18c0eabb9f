package images

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Recipe says what goes into an image of one layer.
type Recipe struct {
	// Ref names the image in the archive, and in containerd once imported,
	// e.g. localhost/trafficpolice/agent:v1. Short names are normalized as
	// containerd does (busybox:t is docker.io/library/busybox:t).
	Ref string
	// Files make up the layer; or Root, a folder packed whole. Not both.
	Files []File
	Root  string
	// Config is the image's run configuration: entrypoint, cmd, env,
	// working folder, user, labels.
	Config v1.Config
	// Arch is the CPU architecture in Go's words (amd64, arm64); "" is this
	// machine's.
	Arch string
	// Epoch is every timestamp in the image; the zero Time means 1970-01-01.
	Epoch time.Time
	// CreatedBy is the image's history line.
	CreatedBy string
}

// Result describes a written archive.
type Result struct {
	// Ref is the normalized name the archive carries.
	Ref string
	// Digest is the image manifest's digest ("sha256:…"): the image's
	// identity, the same for the same inputs.
	Digest string
	// Size is the archive's size in bytes.
	Size int64
	// Platforms are the images the archive holds, one per platform; for
	// an image of one platform, its Digest is Digest.
	Platforms []PlatformImage
}

// PlatformImage is one platform's image in an archive.
type PlatformImage struct {
	// Platform is "linux/amd64", "linux/arm64"…
	Platform string
	// Digest is the platform's image manifest's digest.
	Digest string
}

// EpochFromEnv returns SOURCE_DATE_EPOCH (seconds since 1970), the
// reproducible-builds convention for a fixed build time, or 1970 itself
// when it is unset.
func EpochFromEnv() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is invalid: want seconds since 1970 as a whole number", v)
	}
	return time.Unix(n, 0).UTC(), nil
}

// NormalizeRef returns ref as containerd names it: with its registry and
// a tag (":latest" when it has none).
func NormalizeRef(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q is invalid (%v): want a name such as localhost/trafficpolice/agent:v1", ref, err)
	}
	return reference.TagNameOnly(named).String(), nil
}

// WriteFile writes the recipe's image as an OCI archive at path. The file
// appears whole or not at all.
func WriteFile(path string, r Recipe) (Result, error) {
	return writeArchiveFile(path, func(w io.Writer) (Result, error) { return Write(w, r) })
}

// writeArchiveFile writes an archive at path through write, whole or not at all.
func writeArchiveFile(path string, write func(io.Writer) (Result, error)) (Result, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return Result{}, fmt.Errorf("write image archive: %w", err)
	}
	defer os.Remove(tmp.Name())
	res, err := write(tmp)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write image archive %s: %w", path, cerr)
	}
	if err != nil {
		return Result{}, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return Result{}, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Result{}, fmt.Errorf("write image archive: %w", err)
	}
	return res, nil
}

// Write writes the recipe's image to w as an OCI archive.
func Write(w io.Writer, r Recipe) (Result, error) {
	img, ref, cleanup, err := build(r)
	if err != nil {
		return Result{}, err
	}
	defer cleanup()
	cf, err := img.ConfigFile()
	if err != nil {
		return Result{}, fmt.Errorf("image config: %w", err)
	}
	platform := &v1.Platform{OS: cf.OS, Architecture: cf.Architecture}
	cw := &countingWriter{w: w}
	digest, err := writeArchive(cw, img, platform, ref, epochOf(r))
	if err != nil {
		return Result{}, err
	}
	return Result{Ref: ref, Digest: digest, Size: cw.n, Platforms: []PlatformImage{{Platform: platform.String(), Digest: digest}}}, nil
}

// Build returns the recipe's image, for go-containerregistry's other
// writers (remote.Write pushes it to a registry), and its normalized
// reference. Call cleanup when done with the image.
func Build(r Recipe) (img v1.Image, ref string, cleanup func(), err error) {
	return build(r)
}

func epochOf(r Recipe) time.Time {
	if r.Epoch.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return r.Epoch
}

func build(r Recipe) (v1.Image, string, func(), error) {
	nothing := func() {}
	ref, err := NormalizeRef(r.Ref)
	if err != nil {
		return nil, "", nothing, err
	}
	if strings.Contains(ref, "@") {
		return nil, "", nothing, fmt.Errorf("image reference %q names a digest: a built image needs a tag, such as localhost/trafficpolice/agent:v1", r.Ref)
	}
	layer, cleanup, err := buildLayer(r, epochOf(r))
	if err != nil {
		return nil, "", nothing, err
	}
	img, err := buildImage(r, layer, epochOf(r))
	if err != nil {
		cleanup()
		return nil, "", nothing, err
	}
	return img, ref, cleanup, nil
}

// buildLayer writes the layer's tar once (in memory for a list of files,
// to a temporary file for a whole tree) and wraps it as a gzip layer.
func buildLayer(r Recipe, epoch time.Time) (v1.Layer, func(), error) {
	nothing := func() {}
	var opener tarball.Opener
	cleanup := nothing
	switch {
	case r.Root != "" && len(r.Files) > 0:
		return nil, nothing, errors.New("recipe has both Root and Files: want one of them")
	case r.Root != "":
		tmp, err := os.CreateTemp("", "trafficpolice-layer-*.tar")
		if err != nil {
			return nil, nothing, fmt.Errorf("layer: %w", err)
		}
		cleanup = func() { os.Remove(tmp.Name()) }
		err = writeDirLayer(tmp, r.Root, epoch)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			cleanup()
			return nil, nothing, err
		}
		name := tmp.Name()
		opener = func() (io.ReadCloser, error) { return os.Open(name) }
	case len(r.Files) > 0:
		var buf bytes.Buffer
		if err := writeFilesLayer(&buf, r.Files, epoch); err != nil {
			return nil, nothing, err
		}
		body := buf.Bytes()
		opener = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	default:
		return nil, nothing, errors.New("recipe has neither Root nor Files: an image needs something in it")
	}
	layer, err := tarball.LayerFromOpener(opener, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		cleanup()
		return nil, nothing, fmt.Errorf("layer: %w", err)
	}
	return layer, cleanup, nil
}

func buildImage(r Recipe, layer v1.Layer, epoch time.Time) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: r.CreatedBy},
	})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: epoch}
	cf.OS = "linux"
	cf.Architecture = r.Arch
	if cf.Architecture == "" {
		cf.Architecture = runtime.GOARCH
	}
	cf.Config = r.Config
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	return img, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
