package k8s

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/trafficpolice/trafficpolice/images"
)

// The images the harness imports into containerd's "k8s.io" namespace
// (pods use them with imagePullPolicy: Never), and the agent image's tag
// in the cluster's registry, from which the node pulls it.
const (
	// PauseImage is the pod sandbox image containerd's CRI plugin is
	// pinned to (see .ci/containerd.sh).
	PauseImage = "localhost/pause:v1"
	// AppImage holds testapp (see testapp/): `testapp serve ...`, and the
	// seed story's apps as /uwu-app, /uwu-service and /messages-db.
	AppImage = "localhost/tp-k8s/testapp:v1"
	// AgentTag is the agent image's tag in the cluster's registry; the
	// image is built from this tree's trafficpolice and given to every
	// run as agent.image (Cluster.AgentImage).
	AgentTag = "k8s-test"
	// ImageEnv is a variable AppImage's OCI config sets (KEY=VALUE).
	ImageEnv = "IMAGE_GREETING=hello from the image"
)

// SeedApps are the seed story's programs (test/apps/NAME) that AppImage
// holds as /NAME.
var SeedApps = []string{"uwu-app", "uwu-service", "messages-db"}

// importImages builds the binaries (trafficpolice, testapp), packs them
// as images, pushes the agent's to the cluster's registry with
// `trafficpolice images push` and imports the others into containerd.
func (c *Cluster) importImages() error {
	dir := filepath.Join(c.dir, "images")
	tp, err := c.BuildBinary("./cmd/trafficpolice")
	if err != nil {
		return err
	}
	app, err := c.BuildBinary("./test/k8s/testapp")
	if err != nil {
		return err
	}
	var seedApps []images.File
	for _, name := range SeedApps {
		bin, err := c.BuildBinary("./test/apps/" + name)
		if err != nil {
			return err
		}
		seedApps = append(seedApps, images.File{Path: name, Mode: 0o755, Source: bin})
	}
	c.AgentImage = c.Registry + "/" + AgentRepo + ":" + AgentTag
	agent, err := images.Agent(tp, c.AgentImage)
	if err != nil {
		return err
	}
	agentArchive := filepath.Join(dir, "agent.tar")
	if _, err := images.WriteFile(agentArchive, agent); err != nil {
		return fmt.Errorf("build image %s: %w", agent.Ref, err)
	}
	// The node pulls it: the CRI names it by this reference, which the
	// teardown removes with the imported ones, and with any other image
	// pulled from this registry.
	if err := os.WriteFile(filepath.Join(dir, "registry"), []byte(c.Registry), 0o644); err != nil {
		return fmt.Errorf("record the registry: %w", err)
	}
	refs := []string{c.AgentImage}
	if err := os.WriteFile(filepath.Join(dir, "refs"), []byte(strings.Join(refs, "\n")), 0o644); err != nil {
		return fmt.Errorf("record image names: %w", err)
	}
	if err := pushImage(context.Background(), tp, agentArchive, c.AgentImage); err != nil {
		return err
	}
	base := []images.File{
		{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "testapp", Mode: 0o755, Source: app},
	}
	recipes := []images.Recipe{
		{Ref: PauseImage, Files: base, Config: v1.Config{Entrypoint: []string{"/testapp", "pause"}}},
		// ImageEnv is in the image's config only, not in any pod spec:
		// feature.env must read it from the running process.
		{Ref: AppImage, Files: append(append([]images.File{}, base...), seedApps...), Config: v1.Config{
			Entrypoint: []string{"/testapp"}, Cmd: []string{"serve"}, Env: []string{ImageEnv}}},
	}
	for i, r := range recipes {
		archive := filepath.Join(dir, fmt.Sprintf("image-%d.tar", i))
		res, err := images.WriteFile(archive, r)
		if err != nil {
			return fmt.Errorf("build image %s: %w", r.Ref, err)
		}
		refs = append(refs, res.Ref)
		// Recorded before the import, so that a dead run's images are removed too.
		if err := os.WriteFile(filepath.Join(dir, "refs"), []byte(strings.Join(refs, "\n")), 0o644); err != nil {
			return fmt.Errorf("record image names: %w", err)
		}
		if out, err := ctr("images", "import", archive).CombinedOutput(); err != nil {
			return fmt.Errorf("import %s into containerd: %w\n%s", r.Ref, err, out)
		}
	}
	return nil
}

// BuildBinary builds a main package of this module (a path relative to
// the module root) into the run dir, statically, and returns its path.
func (c *Cluster) BuildBinary(pkg string) (string, error) {
	gomod, err := findRepoFile("go.mod")
	if err != nil {
		return "", err
	}
	dir := filepath.Join(c.dir, "images")
	if c.dir == "" { // attached to someone's cluster: no run dir
		if dir, err = os.MkdirTemp("", "tp-k8s-bin-"); err != nil {
			return "", err
		}
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := goCmd(filepath.Dir(gomod), []string{"CGO_ENABLED=0"}, "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(cmd.Env, "GOFLAGS=-mod=readonly")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

func ctr(args ...string) *exec.Cmd {
	return exec.Command("ctr", append([]string{"--address", ContainerdSocket, "--namespace", "k8s.io"}, args...)...)
}

// removeImages removes the images a run imported and those the node
// pulled from its registry.
func removeImages(dir string, log io.Writer) {
	b, err := os.ReadFile(filepath.Join(dir, "images", "refs"))
	if err != nil {
		return
	}
	refs := strings.Fields(string(b))
	if len(refs) == 0 {
		return
	}
	registry, _ := os.ReadFile(filepath.Join(dir, "images", "registry"))
	// The CRI plugin names each image it uses by its id too ("sha256:…");
	// the harness owns containerd's k8s.io namespace, so those go as well.
	if out, err := ctr("images", "ls", "-q").Output(); err == nil {
		for _, ref := range strings.Fields(string(out)) {
			pulled := len(registry) > 0 && strings.HasPrefix(ref, string(registry)+"/")
			if strings.HasPrefix(ref, "sha256:") || (pulled && !slices.Contains(refs, ref)) {
				refs = append(refs, ref)
			}
		}
	}
	if out, err := ctr(append([]string{"images", "rm"}, refs...)...).CombinedOutput(); err != nil {
		fmt.Fprintf(log, "k8s harness: teardown: remove images: %v %s\n", err, out)
	}
}
