package registry_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/trafficpolice/trafficpolice/images"
	"github.com/trafficpolice/trafficpolice/images/registry"
)

// testRegistry is a real OCI registry on loopback; with a user, it asks
// every request for that user's basic credentials, as a private registry
// does, and records which users it served.
type testRegistry struct {
	host           string
	user, password string

	mu    sync.Mutex
	users map[string]bool
}

func startRegistry(t *testing.T, user, password string) *testRegistry {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &testRegistry{host: ln.Addr().String(), user: user, password: password, users: map[string]bool{}}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != r.user || p != r.password {
				w.Header().Set("WWW-Authenticate", `Basic realm="trafficpolice-test"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
			r.mu.Lock()
			r.users[u] = true
			r.mu.Unlock()
		}
		inner.ServeHTTP(w, req)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *testRegistry) served(user string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.users[user]
}

// dockerConfig points the keychain at a fresh docker config.json holding
// auths (host → "user:password"), and a HOME of its own, so the machine's
// own credentials play no part.
func dockerConfig(t *testing.T, auths map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	entries := map[string]any{}
	for host, up := range auths {
		entries[host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(up))}
	}
	writeJSON(t, filepath.Join(dir, "config.json"), map[string]any{"auths": entries})
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("SUDO_USER", "")
	return filepath.Join(dir, "config.json")
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// twoPlatformArchive writes an image index with a linux/amd64 and a
// linux/arm64 image (of a file each) as an OCI archive.
func twoPlatformArchive(t *testing.T) (string, images.Result) {
	t.Helper()
	var recipes []images.Recipe
	for _, arch := range []string{"amd64", "arm64"} {
		recipes = append(recipes, images.Recipe{
			Arch:   arch,
			Files:  []images.File{{Path: "hello", Mode: 0o644, Data: []byte("hello from " + arch)}},
			Config: v1.Config{Cmd: []string{"/hello"}},
		})
	}
	file := filepath.Join(t.TempDir(), "two.tar")
	res, err := images.WriteIndexFile(file, images.IndexRecipe{Ref: "localhost/trafficpolice/two:1", Images: recipes})
	if err != nil {
		t.Fatal(err)
	}
	return file, res
}

// checkIndex reads ref back with explicit credentials and wants the
// archive's index, both platforms in it.
func checkIndex(t *testing.T, ref string, auth authn.Authenticator, want images.Result) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r, remote.WithAuth(auth))
	if err != nil {
		t.Fatalf("read %s back: %v", ref, err)
	}
	digest, _ := idx.Digest()
	if digest.String() != want.Digest {
		t.Fatalf("%s has digest %s, the archive's index is %s", ref, digest, want.Digest)
	}
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 2 {
		t.Fatalf("%s lists %d manifests, want 2", ref, len(im.Manifests))
	}
	for i, m := range im.Manifests {
		if m.Platform.String() != want.Platforms[i].Platform {
			t.Fatalf("%s entry %d is %s, want %s", ref, i, m.Platform, want.Platforms[i].Platform)
		}
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		// Every layer is there, not only the manifests.
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s %s: layers %v, %v", ref, m.Platform, layers, err)
		}
		rc, err := layers[0].Compressed()
		if err != nil {
			t.Fatalf("%s %s: layer: %v", ref, m.Platform, err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
	}
}

func TestPushArchiveUsesTheDockerConfigCredentials(t *testing.T) {
	reg := startRegistry(t, "alice", "s3cret")
	dockerConfig(t, map[string]string{reg.host: "alice:s3cret"})
	file, res := twoPlatformArchive(t)

	dst := reg.host + "/mirror/two:v1"
	p, err := registry.Push(context.Background(), file, dst, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest != res.Digest || strings.Join(p.Platforms, ",") != "linux/amd64,linux/arm64" || p.Ref != dst {
		t.Fatalf("pushed %+v, want digest %s and both platforms under %s", p, res.Digest, dst)
	}
	if !reg.served("alice") {
		t.Fatal("the registry never saw alice's credentials")
	}
	checkIndex(t, dst, &authn.Basic{Username: "alice", Password: "s3cret"}, res)
}

func TestPushWithAWrongPasswordSaysWhatToDo(t *testing.T) {
	reg := startRegistry(t, "alice", "s3cret")
	config := dockerConfig(t, map[string]string{reg.host: "alice:wrong"})
	file, _ := twoPlatformArchive(t)

	_, err := registry.Push(context.Background(), file, reg.host+"/mirror/two:v1", registry.Options{})
	if err == nil {
		t.Fatal("a wrong password pushed")
	}
	t.Logf("the error: %v", err)
	for _, want := range []string{"registry " + reg.host + " refused", `user "alice"`, config, "docker login " + reg.host} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestPushWithNoCredentialsSaysNoneAreConfigured(t *testing.T) {
	reg := startRegistry(t, "alice", "s3cret")
	config := dockerConfig(t, map[string]string{"other.example.com": "bob:x"})
	t.Setenv("SUDO_USER", "carol")
	file, _ := twoPlatformArchive(t)

	_, err := registry.Push(context.Background(), file, reg.host+"/mirror/two:v1", registry.Options{})
	if err == nil {
		t.Fatal("an anonymous push to a registry that wants a login worked")
	}
	for _, want := range []string{"anonymous", config + " has no credentials", "docker login " + reg.host} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// Under sudo the config is root's, not carol's: say so.
	t.Setenv("DOCKER_CONFIG", "")
	_, err = registry.Push(context.Background(), file, reg.host+"/mirror/two:v1", registry.Options{})
	if err == nil || !strings.Contains(err.Error(), "under sudo") || !strings.Contains(err.Error(), "~carol/.docker") {
		t.Errorf("under sudo: %v, want the hint about root's keychain", err)
	}
}

// TestMirrorCopiesEveryPlatform mirrors an image from one registry into
// another that wants a login, as a user copies the project's agent image
// into a private registry.
func TestMirrorCopiesEveryPlatform(t *testing.T) {
	public := startRegistry(t, "", "")
	private := startRegistry(t, "ci", "pw")
	dockerConfig(t, map[string]string{private.host: "ci:pw"})
	file, res := twoPlatformArchive(t)
	src := public.host + "/trafficpolice/two:v1"
	if _, err := registry.Push(context.Background(), file, src, registry.Options{}); err != nil {
		t.Fatal(err)
	}
	dst := private.host + "/corp/trafficpolice/two:v1"
	p, err := registry.Push(context.Background(), src, dst, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest != res.Digest {
		t.Fatalf("mirror has digest %s, want the source's %s", p.Digest, res.Digest)
	}
	checkIndex(t, dst, &authn.Basic{Username: "ci", Password: "pw"}, res)

	_, err = registry.Push(context.Background(), public.host+"/trafficpolice/none:v1", dst, registry.Options{})
	if err == nil || !strings.Contains(err.Error(), "has no such image") || !strings.Contains(err.Error(), public.host) {
		t.Fatalf("mirror of a missing image: %v, want the registry and that it has no such image", err)
	}
}

func TestPushRefusesBadInput(t *testing.T) {
	dockerConfig(t, nil)
	for _, tc := range []struct{ src, dst, want string }{
		{"./missing.tar", "127.0.0.1:1/x:1", "missing.tar"},
		{t.TempDir(), "127.0.0.1:1/x:1", "is a folder"},
		{"127.0.0.1:1/x:1", "UPPER/Case:x", `destination "UPPER/Case:x" is not an image reference`},
	} {
		_, err := registry.Push(context.Background(), tc.src, tc.dst, registry.Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Push(%q, %q): %v, want it to say %q", tc.src, tc.dst, err, tc.want)
		}
	}
}

func TestCredentialsForContainerd(t *testing.T) {
	dockerConfig(t, map[string]string{"registry.example.com": "alice:s3cret", "https://index.docker.io/v1/": "dh:tok"})
	for host, want := range map[string]string{
		"registry.example.com": "alice:s3cret",
		// containerd asks for Docker Hub's API host.
		"registry-1.docker.io": "dh:tok",
		"elsewhere.example":    ":",
	} {
		u, p, err := registry.Credentials(host)
		if err != nil || u+":"+p != want {
			t.Errorf("Credentials(%q) = %q, %q, %v; want %q", host, u, p, err, want)
		}
	}
}

// TestCredentialHelpersAreUsed has the config name a credential helper
// for the registry, as `docker login` does with a desktop keyring.
func TestCredentialHelpersAreUsed(t *testing.T) {
	config := dockerConfig(t, nil)
	bin := t.TempDir()
	helper := "#!/bin/sh\nread server\necho \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"helped\\\",\\\"Secret\\\":\\\"from-helper\\\"}\"\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-tptest"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	writeJSON(t, config, map[string]any{"credHelpers": map[string]string{"registry.example.com": "tptest"}})
	u, p, err := registry.Credentials("registry.example.com")
	if err != nil || u != "helped" || p != "from-helper" {
		t.Fatalf("Credentials through a helper = %q, %q, %v", u, p, err)
	}
}

// TestPushDockerSaveArchive pushes an archive in `docker save`'s old
// format (manifest.json, no index.json), as a user with Docker has one.
func TestPushDockerSaveArchive(t *testing.T) {
	reg := startRegistry(t, "", "")
	dockerConfig(t, nil)
	img, _, cleanup, err := images.Build(images.Recipe{
		Ref:   "localhost/trafficpolice/docker:1",
		Arch:  "arm64",
		Files: []images.File{{Path: "hello", Mode: 0o644, Data: []byte("hello")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	tag, err := name.NewTag("localhost/trafficpolice/docker:1")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "docker.tar")
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		t.Fatal(err)
	}
	// A docker archive's manifest is Docker's own format (another digest);
	// the config, which says what the image is, is the same.
	want, _ := img.ConfigName()
	p, err := registry.Push(context.Background(), file, reg.host+"/from/docker:1", registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Platforms) != 1 || p.Platforms[0] != "linux/arm64" {
		t.Fatalf("pushed %+v, want linux/arm64", p)
	}
	ref, _ := name.ParseReference(reg.host + "/from/docker:1")
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := got.Digest()
	config, _ := got.ConfigName()
	if d.String() != p.Digest || config != want {
		t.Fatalf("the registry has %s (config %s), want %s (config %s)", d, config, p.Digest, want)
	}
}
