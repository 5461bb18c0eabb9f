package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

const busyboxPath = "/bin/busybox"

func needBusybox(t *testing.T) {
	t.Helper()
	_, err := os.Stat(busyboxPath)
	netnstest.Need(t, err == nil, "this test needs %s: apt-get install busybox-static", busyboxPath)
}

// copyWithTime copies src to a new file whose modification time is mtime.
func copyWithTime(t *testing.T, src string, mtime time.Time) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	must(t, os.WriteFile(dst, b, 0o700))
	must(t, os.Chtimes(dst, mtime, mtime))
	return dst
}

func TestSameInputsGiveTheSameDigest(t *testing.T) {
	needBusybox(t)
	// The same binary at other paths, times and modes must not matter.
	a := copyWithTime(t, busyboxPath, time.Now())
	b := copyWithTime(t, busyboxPath, time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
	build := func(bin string, epoch time.Time) (Result, []byte) {
		r, err := Agent(bin, "localhost/trafficpolice/agent:test")
		if err != nil {
			t.Fatal(err)
		}
		r.Epoch = epoch
		var buf bytes.Buffer
		res, err := Write(&buf, r)
		if err != nil {
			t.Fatal(err)
		}
		return res, buf.Bytes()
	}
	ra, archA := build(a, time.Time{})
	rb, archB := build(b, time.Time{})
	if ra.Digest != rb.Digest || !bytes.Equal(archA, archB) {
		t.Fatalf("two builds of the same binary differ: %s and %s", ra.Digest, rb.Digest)
	}
	if !strings.HasPrefix(ra.Digest, "sha256:") || ra.Size != int64(len(archA)) {
		t.Fatalf("result %+v for a %d-byte archive", ra, len(archA))
	}
	// The epoch is part of the recipe: another one is another image.
	rc, _ := build(a, time.Unix(1700000000, 0))
	if rc.Digest == ra.Digest {
		t.Fatal("another SOURCE_DATE_EPOCH gave the same digest")
	}
}

func TestEpochFromEnv(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if e, err := EpochFromEnv(); err != nil || e.Unix() != 0 {
		t.Fatalf("unset: %v %v", e, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if e, err := EpochFromEnv(); err != nil || e.Unix() != 1700000000 {
		t.Fatalf("set: %v %v", e, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := EpochFromEnv(); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Fatalf("bad value: %v", err)
	}
}

// archive is an OCI archive read back.
type archive struct {
	names []string
	files map[string][]byte
	hdrs  map[string]*tar.Header
}

func readArchive(t *testing.T, r io.Reader) archive {
	t.Helper()
	a := archive{files: map[string][]byte{}, hdrs: map[string]*tar.Header{}}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return a
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		a.names = append(a.names, h.Name)
		a.files[h.Name] = b
		a.hdrs[h.Name] = h
	}
}

func (a archive) json(t *testing.T, name string, v any) {
	t.Helper()
	b, ok := a.files[name]
	if !ok {
		t.Fatalf("archive lacks %s; has %v", name, a.names)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// layer returns the headers of the image's one layer, in order.
func (a archive) layer(t *testing.T) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	var idx v1.IndexManifest
	a.json(t, "index.json", &idx)
	var m v1.Manifest
	a.json(t, blobPath(idx.Manifests[0].Digest), &m)
	if len(m.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(m.Layers))
	}
	zr, err := gzip.NewReader(bytes.NewReader(a.files[blobPath(m.Layers[0].Digest)]))
	if err != nil {
		t.Fatal(err)
	}
	var hdrs []*tar.Header
	bodies := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, bodies
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		hdrs = append(hdrs, h)
		bodies[h.Name] = b
	}
}

func TestBusyboxArchiveIsAnOCILayoutContainerdCanName(t *testing.T) {
	needBusybox(t)
	r, err := Busybox(busyboxPath, "localhost/trafficpolice/busybox:t1")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	res, err := Write(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	a := readArchive(t, &buf)
	if !slices.IsSorted(a.names[2:]) || a.names[0] != "blobs/" {
		t.Fatalf("entries not in order: %v", a.names)
	}
	for _, h := range a.hdrs {
		if !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Fatalf("%s has time %v, want 1970", h.Name, h.ModTime)
		}
	}
	contains(t, string(a.files["oci-layout"]), `"imageLayoutVersion":"1.0.0"`)
	var idx v1.IndexManifest
	a.json(t, "index.json", &idx)
	d := idx.Manifests[0]
	if d.Digest.String() != res.Digest || d.Annotations[annotationContainerdName] != "localhost/trafficpolice/busybox:t1" ||
		d.Annotations[annotationRefName] != "t1" || d.Platform == nil || d.Platform.OS != "linux" || d.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("index entry %+v (platform %+v), want digest %s, the names and linux", d, d.Platform, res.Digest)
	}
	var m v1.Manifest
	a.json(t, blobPath(d.Digest), &m)
	var cf v1.ConfigFile
	a.json(t, blobPath(m.Config.Digest), &cf)
	if !cf.Created.Equal(time.Unix(0, 0)) || cf.Config.Cmd[0] != "/bin/sh" || cf.Architecture == "" {
		t.Fatalf("config %+v", cf)
	}

	hdrs, _ := a.layer(t)
	byName := map[string]*tar.Header{}
	var names []string
	for _, h := range hdrs {
		byName[h.Name] = h
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Fatalf("%s: owner %d:%d %q, time %v; want numeric root, 1970", h.Name, h.Uid, h.Gid, h.Uname, h.ModTime)
		}
	}
	if !slices.IsSorted(names) {
		t.Fatalf("layer entries not sorted: %v", names)
	}
	if h := byName["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/bin/busybox" {
		t.Fatalf("bin/sh: %+v", h)
	}
	if h := byName["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Fatalf("tmp/: %+v", h)
	}
	if h := byName["bin/busybox"]; h == nil || h.Mode != 0o755 {
		t.Fatalf("bin/busybox: %+v", h)
	}
}

func TestAgentNeedsAStaticBinary(t *testing.T) {
	_, err := Agent("/bin/ls", "localhost/x:1")
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("dynamically linked /bin/ls: %v, want advice to build static", err)
	}
	_, err = Agent("/etc/hostname", "localhost/x:1")
	if err == nil || !strings.Contains(err.Error(), "not a Linux program") {
		t.Fatalf("not a program: %v", err)
	}
}

func TestBadRecipesAreRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		r    Recipe
		want string
	}{
		"bad ref":     {Recipe{Ref: "Not A Ref", Files: []File{{Path: "a", Mode: 0o644}}}, `"Not A Ref" is invalid`},
		"digest ref":  {Recipe{Ref: "localhost/x@sha256:" + strings.Repeat("a", 64), Files: []File{{Path: "a", Mode: 0o644}}}, "tag"},
		"climbs out":  {Recipe{Ref: "localhost/x:1", Files: []File{{Path: "../etc/passwd", Mode: 0o644}}}, "must not contain .."},
		"twice":       {Recipe{Ref: "localhost/x:1", Files: []File{{Path: "a", Mode: 0o644}, {Path: "/a", Mode: 0o644}}}, "appears twice"},
		"under file":  {Recipe{Ref: "localhost/x:1", Files: []File{{Path: "a", Mode: 0o644}, {Path: "a/b", Mode: 0o644}}}, "not a folder"},
		"empty link":  {Recipe{Ref: "localhost/x:1", Files: []File{{Path: "l", Mode: fs.ModeSymlink}}}, "empty Link"},
		"both":        {Recipe{Ref: "localhost/x:1", Root: "/", Files: []File{{Path: "a", Mode: 0o644}}}, "both Root and Files"},
		"nothing":     {Recipe{Ref: "localhost/x:1"}, "neither Root nor Files"},
		"no such src": {Recipe{Ref: "localhost/x:1", Files: []File{{Path: "a", Mode: 0o644, Source: "/no/such/file"}}}, "no such file"},
	} {
		_, err := Write(io.Discard, tc.r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestDirImageKeepsOwnersModesAndLinks(t *testing.T) {
	netnstest.RequireRoot(t) // chown, mknod
	root := t.TempDir()
	write := func(p string, mode fs.FileMode, body string) string {
		full := filepath.Join(root, p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		must(t, os.WriteFile(full, []byte(body), mode))
		must(t, os.Chmod(full, mode))
		return full
	}
	write("usr/bin/tool", 0o755|fs.ModeSetuid, "#!/bin/sh\n")
	owned := write("home/dev/notes", 0o600, "mine\n")
	must(t, os.Chown(owned, 1000, 1001))
	must(t, os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool-alias")))
	must(t, os.Symlink("tool", filepath.Join(root, "usr/bin/t")))
	write("dev/stale", 0o644, "the runtime's, not the image's\n")
	must(t, unix.Mknod(filepath.Join(root, "etc-null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))

	build := func() (Result, []*tar.Header, map[string][]byte) {
		r, err := Dir(root, "localhost/dev/test:1", []string{"/bin/bash"})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		res, err := Write(&buf, r)
		if err != nil {
			t.Fatal(err)
		}
		hdrs, bodies := readArchive(t, &buf).layer(t)
		return res, hdrs, bodies
	}
	res, hdrs, bodies := build()
	by := map[string]*tar.Header{}
	for _, h := range hdrs {
		by[h.Name] = h
	}
	if h := by["home/dev/notes"]; h == nil || h.Uid != 1000 || h.Gid != 1001 || h.Mode != 0o600 || string(bodies[h.Name]) != "mine\n" {
		t.Fatalf("home/dev/notes: %+v", h)
	}
	if h := by["usr/bin/tool"]; h == nil || h.Mode != 0o4755 || h.Typeflag != tar.TypeReg {
		t.Fatalf("usr/bin/tool: %+v", h)
	}
	if h := by["usr/bin/tool-alias"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "usr/bin/tool" {
		t.Fatalf("usr/bin/tool-alias should be a hard link to usr/bin/tool: %+v", h)
	}
	if h := by["usr/bin/t"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "tool" {
		t.Fatalf("usr/bin/t: %+v", h)
	}
	if h := by["etc-null"]; h == nil || h.Typeflag != tar.TypeChar || h.Devmajor != 1 || h.Devminor != 3 {
		t.Fatalf("etc-null: %+v", h)
	}
	if by["dev/"] == nil || by["dev/stale"] != nil {
		t.Fatalf("dev/ should be there, empty: %v", by["dev/stale"])
	}
	// Touching the tree changes no byte of the image.
	now := time.Now()
	must(t, os.Chtimes(filepath.Join(root, "home/dev/notes"), now, now))
	if again, _, _ := build(); again.Digest != res.Digest {
		t.Fatalf("digest changed with a timestamp: %s, then %s", res.Digest, again.Digest)
	}
}

func TestWriteFileLeavesNoPartialArchive(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.tar")
	_, err := WriteFile(out, Recipe{Ref: "localhost/x:1", Files: []File{{Path: "a", Mode: 0o644, Source: "/no/such/file"}}})
	if err == nil {
		t.Fatal("no error for a missing source")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("left %v", entries)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

func contains(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("%q lacks %q", got, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
