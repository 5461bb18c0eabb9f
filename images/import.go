package images

import (
	"context"
	"errors"
	"fmt"
	"io"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
)

// Imported is one image an archive held.
type Imported struct {
	Name   string
	Digest string // the manifest (or index) digest containerd has for it
}

// Import loads an OCI (or Docker) image archive from r into containerd's
// namespace and unpacks each image for snapshotter, so it runs at once.
// An archive whose images carry no name is refused: nothing could find them.
func Import(ctx context.Context, client *containerd.Client, namespace, snapshotter string, r io.Reader) ([]Imported, error) {
	if namespace == "" {
		return nil, errors.New("namespace is empty: want a containerd namespace such as trafficpolice or k8s.io")
	}
	ctx = namespaces.WithNamespace(ctx, namespace)
	imgs, err := client.Import(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("import into containerd namespace %s: %w", namespace, err)
	}
	if len(imgs) == 0 {
		return nil, errors.New("the archive names no image (no io.containerd.image.name or org.opencontainers.image.ref.name annotation in its index.json)")
	}
	var out []Imported
	for _, img := range imgs {
		image := containerd.NewImage(client, img)
		if err := image.Unpack(ctx, snapshotter); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", img.Name, err)
		}
		out = append(out, Imported{Name: img.Name, Digest: img.Target.Digest.String()})
	}
	return out, nil
}
