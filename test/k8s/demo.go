package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Attach returns a Cluster for an existing cluster (a developer's, for
// `make demo KUBECONFIG=...`): the harness starts nothing and Stop must
// not be called. appImage is the image holding testapp that its nodes
// can pull ("" for AppImage, imported by hand).
func Attach(kubeconfig, appImage string) (*Cluster, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return &Cluster{Kubeconfig: kubeconfig, Client: cs, REST: cfg, appImage: appImage, log: io.Discard}, nil
}

// DemoOptions configure Demo.
type DemoOptions struct {
	// Trafficpolice is the CLI binary to run.
	Trafficpolice string
	// AgentImage is the agent image the cluster's nodes have.
	AgentImage string
	// Ephemeral starts the agent as an ephemeral container (else a Job).
	Ephemeral bool
	Out       io.Writer
}

// Demo deploys the seed story in a namespace of its own and runs, under
// `trafficpolice sandbox run` with "target": "deployment/uwu-app", a
// script that calls uwu-service by its short name, the pod's sidecar on
// 127.0.0.1 and prints the pod's environment; then removes the namespace.
func (c *Cluster) Demo(ctx context.Context, o DemoOptions) error {
	ns, err := c.NewNamespace(ctx, "trafficpolice-demo")
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "demo: namespace %s: deployment uwu-app (with a sidecar on 127.0.0.1:%d), deployment and service uwu-service\n", ns, SidecarPort)
	defer func() {
		fmt.Fprintf(o.Out, "demo: deleting namespace %s\n", ns)
		if err := c.DeleteNamespace(context.Background(), ns); err != nil {
			fmt.Fprintf(o.Out, "demo: %v\n", err)
		}
	}()
	if err := c.DeployUwu(ctx, ns); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tp-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := map[string]any{
		"target":  map[string]any{"path": "deployment/uwu-app", "namespace": ns},
		"agent":   map[string]any{"image": o.AgentImage, "ephemeral": o.Ephemeral, "communication_timeout": 5},
		"feature": map[string]any{"env": map[string]any{"exclude": "SECRET_*"}, "network": map[string]any{"incoming": "off"}},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return err
	}
	script := fmt.Sprintf(`set -e
echo "--- curl http://uwu-service:%d/   (cluster service, by its short name; peer = the pod's IP)"
curl -sS --max-time 20 http://uwu-service:%d/
echo "--- curl http://127.0.0.1:%d/   (the pod's sidecar)"
curl -sS --max-time 20 http://127.0.0.1:%d/
echo "--- the pod's environment: GREETING=$GREETING POD_IP=$POD_IP UWU_URL=$UWU_URL"`, ServicePort, ServicePort, SidecarPort, SidecarPort)
	fmt.Fprintf(o.Out, "demo: config.json:\n%s\ndemo: trafficpolice sandbox run -f config.json -- sh -c '...'\n", b)
	cmd := exec.CommandContext(ctx, o.Trafficpolice, "sandbox", "run", "-f", cfgPath, "--kubeconfig", c.Kubeconfig, "--", "sh", "-c", script)
	cmd.Stdout, cmd.Stderr = o.Out, o.Out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("sandbox run: %w", err)
	}
	return nil
}
