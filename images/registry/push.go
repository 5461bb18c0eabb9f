package registry

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Pushed says what a push wrote.
type Pushed struct {
	// Ref is the destination, as the registry names it.
	Ref string
	// Digest is the pushed manifest's or index's digest: pull by
	// Ref@Digest to get exactly this.
	Digest string
	// Platforms are the platforms the image has ("linux/amd64"…); one for
	// an image of a single platform.
	Platforms []string
}

// Push copies src to the registry reference dst with the keychain's
// credentials, every platform of it. src is an OCI archive (as `images
// build` writes it, or `docker save`'s) when it is a file; otherwise an
// image reference, which is mirrored from its registry.
func Push(ctx context.Context, src, dst string, o Options) (Pushed, error) {
	dstRef, err := parseRef("destination", dst, o)
	if err != nil {
		return Pushed{}, err
	}
	fi, err := os.Stat(src)
	switch {
	case err == nil && !fi.IsDir():
		return pushArchive(ctx, src, dstRef)
	case err == nil:
		return Pushed{}, fmt.Errorf("source %q is a folder: want an image archive file (written by `trafficpolice images build`) or an image reference", src)
	case looksLikePath(src):
		return Pushed{}, fmt.Errorf("source %q: %w: want an image archive file (written by `trafficpolice images build`) or an image reference", src, err)
	}
	srcRef, err := parseRef("source", src, o)
	if err != nil {
		return Pushed{}, fmt.Errorf("%w (or the path of an image archive, which does not exist)", err)
	}
	desc, err := remote.Get(srcRef, remoteOptions(ctx)...)
	if err != nil {
		return Pushed{}, Explain(err, "pull", srcRef)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return Pushed{}, Explain(err, "pull", srcRef)
		}
		return writeIndex(ctx, idx, dstRef)
	}
	img, err := desc.Image()
	if err != nil {
		return Pushed{}, Explain(err, "pull", srcRef)
	}
	return writeImage(ctx, img, dstRef)
}

// looksLikePath says whether s was meant as a file: an image reference
// has neither of these.
func looksLikePath(s string) bool {
	return strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".tar")
}

func pushArchive(ctx context.Context, file string, dst name.Reference) (Pushed, error) {
	dir, err := os.MkdirTemp("", "trafficpolice-push-*")
	if err != nil {
		return Pushed{}, fmt.Errorf("unpack %s: %w", file, err)
	}
	defer os.RemoveAll(dir)
	if err := untar(file, dir); err != nil {
		return Pushed{}, err
	}
	if _, err := os.Stat(filepath.Join(dir, "index.json")); errors.Is(err, fs.ErrNotExist) {
		// A docker save archive of the old format: manifest.json only.
		img, err := tarball.ImageFromPath(file, nil)
		if err != nil {
			return Pushed{}, fmt.Errorf("image archive %s has no index.json and is no docker archive: %w", file, err)
		}
		return writeImage(ctx, img, dst)
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return Pushed{}, fmt.Errorf("image archive %s: %w", file, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		return Pushed{}, fmt.Errorf("image archive %s: %w", file, err)
	}
	if len(im.Manifests) != 1 {
		return Pushed{}, fmt.Errorf("image archive %s holds %d images: want one (an image, or an index of platforms) to push", file, len(im.Manifests))
	}
	d := im.Manifests[0]
	switch {
	case d.MediaType.IsIndex():
		idx, err := top.ImageIndex(d.Digest)
		if err != nil {
			return Pushed{}, fmt.Errorf("image archive %s: %w", file, err)
		}
		return writeIndex(ctx, idx, dst)
	case d.MediaType.IsImage():
		img, err := top.Image(d.Digest)
		if err != nil {
			return Pushed{}, fmt.Errorf("image archive %s: %w", file, err)
		}
		return writeImage(ctx, img, dst)
	}
	return Pushed{}, fmt.Errorf("image archive %s: its entry has media type %q: want an image or an index", file, d.MediaType)
}

func writeIndex(ctx context.Context, idx v1.ImageIndex, dst name.Reference) (Pushed, error) {
	if err := remote.WriteIndex(dst, idx, remoteOptions(ctx)...); err != nil {
		return Pushed{}, Explain(err, "push", dst)
	}
	digest, err := idx.Digest()
	if err != nil {
		return Pushed{}, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return Pushed{}, err
	}
	p := Pushed{Ref: dst.Name(), Digest: digest.String()}
	for _, m := range im.Manifests {
		if m.Platform != nil {
			p.Platforms = append(p.Platforms, m.Platform.String())
		}
	}
	return p, nil
}

func writeImage(ctx context.Context, img v1.Image, dst name.Reference) (Pushed, error) {
	if err := remote.Write(dst, img, remoteOptions(ctx)...); err != nil {
		return Pushed{}, Explain(err, "push", dst)
	}
	digest, err := img.Digest()
	if err != nil {
		return Pushed{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Pushed{}, err
	}
	platform := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	return Pushed{Ref: dst.Name(), Digest: digest.String(), Platforms: []string{platform.String()}}, nil
}

// untar unpacks an image archive into dir: regular files and folders
// only, none outside dir.
func untar(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("image archive: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("image archive %s is not a tar file: %w", file, err)
		}
		clean := path.Clean("/" + hdr.Name)[1:]
		if clean == "" || strings.Contains(hdr.Name, "..") {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(clean))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("unpack %s: %w", file, err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return fmt.Errorf("unpack %s: %w", file, err)
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", file, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpack %s: entry %s: %w", file, hdr.Name, err)
			}
		}
	}
}
