package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func platformRecipes(archs ...string) []Recipe {
	var rs []Recipe
	for _, arch := range archs {
		rs = append(rs, Recipe{
			Arch:   arch,
			Files:  []File{{Path: "bin/hello", Mode: 0o755, Data: []byte("program for " + arch)}},
			Config: v1.Config{Entrypoint: []string{"/bin/hello"}},
		})
	}
	return rs
}

// TestIndexArchiveHoldsEveryPlatform writes an index of two platforms
// twice (the same bytes) and reads it back as containerd would: one named
// entry, the index, listing an image per platform with its own config and
// layer.
func TestIndexArchiveHoldsEveryPlatform(t *testing.T) {
	write := func() (Result, []byte) {
		var buf bytes.Buffer
		res, err := WriteIndex(&buf, IndexRecipe{Ref: "registry.example.com/tp/agent:v1", Images: platformRecipes("amd64", "arm64")})
		if err != nil {
			t.Fatal(err)
		}
		return res, buf.Bytes()
	}
	res, b := write()
	res2, b2 := write()
	if res.Digest != res2.Digest || !bytes.Equal(b, b2) {
		t.Fatalf("two writes differ: %s, %s", res.Digest, res2.Digest)
	}
	if len(res.Platforms) != 2 || res.Platforms[0].Platform != "linux/amd64" || res.Platforms[1].Platform != "linux/arm64" {
		t.Fatalf("result platforms %+v", res.Platforms)
	}
	a := readArchive(t, bytes.NewReader(b))
	var layout v1.IndexManifest
	a.json(t, "index.json", &layout)
	if len(layout.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want the index alone", len(layout.Manifests))
	}
	top := layout.Manifests[0]
	if top.Digest.String() != res.Digest || !top.MediaType.IsIndex() || top.Platform != nil ||
		top.Annotations[annotationContainerdName] != "registry.example.com/tp/agent:v1" || top.Annotations[annotationRefName] != "v1" {
		t.Fatalf("index.json entry %+v, want the index %s named registry.example.com/tp/agent:v1", top, res.Digest)
	}
	var idx v1.IndexManifest
	a.json(t, blobPath(top.Digest), &idx)
	if len(idx.Manifests) != 2 {
		t.Fatalf("the index lists %d images, want 2", len(idx.Manifests))
	}
	for i, arch := range []string{"amd64", "arm64"} {
		d := idx.Manifests[i]
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != arch || d.Digest.String() != res.Platforms[i].Digest {
			t.Fatalf("index entry %d: %+v (platform %v), want linux/%s", i, d, d.Platform, arch)
		}
		var m v1.Manifest
		a.json(t, blobPath(d.Digest), &m)
		var cf v1.ConfigFile
		a.json(t, blobPath(m.Config.Digest), &cf)
		if cf.Architecture != arch || cf.OS != "linux" {
			t.Fatalf("linux/%s image's config says %s/%s", arch, cf.OS, cf.Architecture)
		}
		body := layerFile(t, a, m, "bin/hello")
		if string(body) != "program for "+arch {
			t.Fatalf("linux/%s image holds %q", arch, body)
		}
	}
}

func TestBadIndexRecipesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		r    IndexRecipe
		want string
	}{
		{IndexRecipe{Ref: "localhost/x:1"}, "no images"},
		{IndexRecipe{Ref: "localhost/x:1", Images: platformRecipes("amd64", "amd64")}, "two images for linux/amd64"},
		{IndexRecipe{Ref: "localhost/x:1", Images: platformRecipes("")}, "needs its Arch"},
		{IndexRecipe{Ref: "Bad Name", Images: platformRecipes("amd64")}, `"Bad Name" is invalid`},
	} {
		_, err := WriteIndex(io.Discard, tc.r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.r, err, tc.want)
		}
	}
}

// layerFile returns a file's contents from the image's one layer.
func layerFile(t *testing.T, a archive, m v1.Manifest, name string) []byte {
	t.Helper()
	if len(m.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(m.Layers))
	}
	zr, err := gzip.NewReader(bytes.NewReader(a.files[blobPath(m.Layers[0].Digest)]))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("layer has no %s: %v", name, err)
		}
		if h.Name == name {
			b, _ := io.ReadAll(tr)
			return b
		}
	}
}
