package images

import (
	"archive/tar"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations an OCI archive's index carries for its image: containerd
// names the imported image after the first, other tools after the second
// (which holds the tag only, by the OCI layout's convention).
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// blob is one entry of the archive, written from open().
type blob struct {
	name string
	size int64
	open func() (io.ReadCloser, error)
}

func bytesBlob(name string, b []byte) blob {
	return blob{name: name, size: int64(len(b)), open: func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(string(b))), nil
	}}
}

// writeArchive writes top (an image, or an index of one image per
// platform) as an OCI image layout in a tar stream (what `ctr images
// import` and `docker load` read), entries sorted, every timestamp epoch.
// platform is the image's, nil for an index. It returns top's digest.
func writeArchive(w io.Writer, top mutate.Appendable, platform *v1.Platform, ref string, epoch time.Time) (string, error) {
	digest, err := top.Digest()
	if err != nil {
		return "", fmt.Errorf("image digest: %w", err)
	}
	tag := ref[strings.LastIndexByte(ref, ':')+1:]
	layout := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add: top,
		Descriptor: v1.Descriptor{
			Platform:    platform,
			Annotations: map[string]string{annotationContainerdName: ref, annotationRefName: tag},
		},
	})
	rawLayout, err := layout.RawManifest()
	if err != nil {
		return "", fmt.Errorf("image index: %w", err)
	}
	blobs, err := indexBlobs(layout)
	if err != nil {
		return "", err
	}
	blobs = append(blobs,
		bytesBlob("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)),
		bytesBlob("index.json", rawLayout))
	// Sorted for a stable archive; a blob named twice (a layer two
	// platforms share, a repeated layer) is stored once.
	slices.SortFunc(blobs, func(a, b blob) int { return strings.Compare(a.name, b.name) })
	blobs = slices.CompactFunc(blobs, func(a, b blob) bool { return a.name == b.name })
	if err := writeBlobs(w, blobs, epoch); err != nil {
		return "", err
	}
	return digest.String(), nil
}

// indexBlobs are the blobs below idx (not idx itself): each child index
// or image manifest, and what those hold in turn.
func indexBlobs(idx v1.ImageIndex) ([]blob, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	var blobs []blob
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("image index %s: %w", d.Digest, err)
			}
			raw, err := child.RawManifest()
			if err != nil {
				return nil, fmt.Errorf("image index %s: %w", d.Digest, err)
			}
			below, err := indexBlobs(child)
			if err != nil {
				return nil, err
			}
			blobs = append(append(blobs, bytesBlob(blobPath(d.Digest), raw)), below...)
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", d.Digest, err)
			}
			own, err := imageBlobs(img, d.Digest)
			if err != nil {
				return nil, err
			}
			blobs = append(blobs, own...)
		default:
			return nil, fmt.Errorf("image index entry %s has media type %q: want an image or an index", d.Digest, d.MediaType)
		}
	}
	return blobs, nil
}

// imageBlobs are an image's manifest (stored under digest), its config and
// its compressed layers, the layers read only when written.
func imageBlobs(img v1.Image, digest v1.Hash) ([]blob, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("image manifest: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	configName, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	blobs := []blob{bytesBlob(blobPath(digest), rawManifest), bytesBlob(blobPath(configName), rawConfig)}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image layers: %w", err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("layer digest: %w", err)
		}
		size, err := l.Size()
		if err != nil {
			return nil, fmt.Errorf("layer size: %w", err)
		}
		blobs = append(blobs, blob{name: blobPath(d), size: size, open: l.Compressed})
	}
	return blobs, nil
}

// writeBlobs writes the blobs folders, then each blob, checking that it is
// as long as it said.
func writeBlobs(w io.Writer, blobs []blob, epoch time.Time) error {
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := writeHeader(tw, &tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	for _, b := range blobs {
		if err := writeHeader(tw, &tar.Header{Typeflag: tar.TypeReg, Name: b.name, Mode: 0o644, Size: b.size, ModTime: epoch}); err != nil {
			return err
		}
		rc, err := b.open()
		if err != nil {
			return fmt.Errorf("archive entry %s: %w", b.name, err)
		}
		n, err := io.Copy(tw, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("archive entry %s: %w", b.name, err)
		}
		if n != b.size {
			return fmt.Errorf("archive entry %s: wrote %d bytes, want %d", b.name, n, b.size)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image archive: %w", err)
	}
	return nil
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
