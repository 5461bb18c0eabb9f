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

// writeArchive writes img as an OCI image layout in a tar stream (what
// `ctr images import` and `docker load` read), entries sorted, every
// timestamp epoch. It returns the manifest's digest.
func writeArchive(w io.Writer, img v1.Image, ref string, epoch time.Time) (string, error) {
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("image digest: %w", err)
	}
	blobs, err := layoutBlobs(img, digest, ref)
	if err != nil {
		return "", err
	}
	layers, err := layerBlobs(img)
	if err != nil {
		return "", err
	}
	blobs = append(blobs, layers...)
	// Sorted for a stable archive; a blob the image names twice (a repeated
	// layer) is stored once.
	slices.SortFunc(blobs, func(a, b blob) int { return strings.Compare(a.name, b.name) })
	blobs = slices.CompactFunc(blobs, func(a, b blob) bool { return a.name == b.name })
	if err := writeBlobs(w, blobs, epoch); err != nil {
		return "", err
	}
	return digest.String(), nil
}

// layoutBlobs are the archive's metadata: the layout marker, the index
// naming the image ref, the manifest (stored under digest) and the config.
func layoutBlobs(img v1.Image, digest v1.Hash, ref string) ([]blob, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	tag := ref[strings.LastIndexByte(ref, ':')+1:]
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add: img,
		Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
			Annotations: map[string]string{annotationContainerdName: ref, annotationRefName: tag},
		},
	})
	rawIndex, err := idx.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
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
	return []blob{
		bytesBlob("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)),
		bytesBlob("index.json", rawIndex),
		bytesBlob(blobPath(digest), rawManifest),
		bytesBlob(blobPath(configName), rawConfig),
	}, nil
}

// layerBlobs are the image's compressed layers, read only when written.
func layerBlobs(img v1.Image) ([]blob, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image layers: %w", err)
	}
	var blobs []blob
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
