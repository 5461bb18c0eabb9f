package images

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// IndexRecipe is one image for several platforms under one name: an OCI
// image index with an image per platform, from which each node pulls its
// own.
type IndexRecipe struct {
	// Ref names the index, as Recipe.Ref names an image.
	Ref string
	// Images are the platforms' recipes (their Ref is not used), one per
	// architecture; the index lists them in this order.
	Images []Recipe
}

// WriteIndexFile writes the recipe's index and images as an OCI archive
// at path. The file appears whole or not at all.
func WriteIndexFile(path string, r IndexRecipe) (Result, error) {
	return writeArchiveFile(path, func(w io.Writer) (Result, error) { return WriteIndex(w, r) })
}

// WriteIndex writes the recipe's index and images to w as an OCI archive
// whose one entry is the index, named r.Ref.
func WriteIndex(w io.Writer, r IndexRecipe) (Result, error) {
	idx, ref, cleanup, err := BuildIndex(r)
	if err != nil {
		return Result{}, err
	}
	defer cleanup()
	im, err := idx.IndexManifest()
	if err != nil {
		return Result{}, fmt.Errorf("image index: %w", err)
	}
	var platforms []PlatformImage
	for _, d := range im.Manifests {
		platforms = append(platforms, PlatformImage{Platform: d.Platform.String(), Digest: d.Digest.String()})
	}
	cw := &countingWriter{w: w}
	digest, err := writeArchive(cw, idx, nil, ref, epochOf(r.Images[0]))
	if err != nil {
		return Result{}, err
	}
	return Result{Ref: ref, Digest: digest, Size: cw.n, Platforms: platforms}, nil
}

// BuildIndex returns the recipe's image index, for go-containerregistry's
// other writers (remote.WriteIndex pushes it to a registry), and its
// normalized reference. Call cleanup when done with the index.
func BuildIndex(r IndexRecipe) (idx v1.ImageIndex, ref string, cleanup func(), err error) {
	nothing := func() {}
	ref, err = NormalizeRef(r.Ref)
	if err != nil {
		return nil, "", nothing, err
	}
	if strings.Contains(ref, "@") {
		return nil, "", nothing, fmt.Errorf("image reference %q names a digest: a built image needs a tag, such as localhost/trafficpolice/agent:v1", r.Ref)
	}
	if len(r.Images) == 0 {
		return nil, "", nothing, errors.New("image index recipe has no images: want one per platform")
	}
	var cleanups []func()
	cleanup = func() {
		for _, c := range cleanups {
			c()
		}
	}
	var adds []mutate.IndexAddendum
	var seen []string
	for _, ir := range r.Images {
		if ir.Arch == "" {
			cleanup()
			return nil, "", nothing, errors.New("image index recipe: every image needs its Arch")
		}
		if slices.Contains(seen, ir.Arch) {
			cleanup()
			return nil, "", nothing, fmt.Errorf("image index recipe has two images for linux/%s: want one per platform", ir.Arch)
		}
		seen = append(seen, ir.Arch)
		// Each platform is built under the index's name (only the index
		// carries it in the archive).
		ir.Ref = ref
		img, _, c, err := build(ir)
		if err != nil {
			cleanup()
			return nil, "", nothing, fmt.Errorf("image for linux/%s: %w", ir.Arch, err)
		}
		cleanups = append(cleanups, c)
		adds = append(adds, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: ir.Arch}},
		})
	}
	idx = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	return idx, ref, cleanup, nil
}
