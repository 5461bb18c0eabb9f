package k8s

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// registryStorageRecord names, under the run dir, the registry's storage
// folder, so that the teardown of a dead run removes it too.
const registryStorageRecord = "registry-storage"

// AgentRepo is the agent image's repository in the cluster's registry.
const AgentRepo = "trafficpolice/agent"

// startRegistry runs the distribution project's registry on 127.0.0.1
// (plain HTTP: both containerd's CRI and go-containerregistry speak HTTP
// to a loopback registry without being told), with its storage in a
// temporary folder, and returns its host:port.
func (c *Cluster) startRegistry() (string, error) {
	storage, err := os.MkdirTemp("", "tp-k8s-registry-")
	if err != nil {
		return "", fmt.Errorf("registry storage: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, registryStorageRecord), []byte(storage), 0o644); err != nil {
		os.RemoveAll(storage)
		return "", fmt.Errorf("record the registry's storage: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	// The access log stays on: TestAgentStartsFromARegistryPull reads the
	// kubelet's pull from it.
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  draintimeout: 1s
`, storage, host)
	confPath := filepath.Join(c.dir, "registry.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return "", fmt.Errorf("write the registry's configuration: %w", err)
	}
	// Tracing is on by default and would dial an OTLP collector.
	env := []string{"OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}
	if _, err := c.startComponentEnv("registry", env, c.Bin.Registry, "serve", confPath); err != nil {
		return "", err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	err = c.waitFor("the registry at "+host, 30*time.Second, func() error {
		resp, err := client.Get("http://" + host + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	return host, err
}

// pushImage pushes an image archive to ref with the product's own
// `trafficpolice images push`, as a user would.
func pushImage(ctx context.Context, trafficpolice, archive, ref string) error {
	out, err := exec.CommandContext(ctx, trafficpolice, "images", "push", archive, ref).CombinedOutput()
	if err != nil {
		return fmt.Errorf("trafficpolice images push %s %s: %w\n%s", archive, ref, err, out)
	}
	return nil
}

// RegistryLog is the registry's log so far (its access log included).
func (c *Cluster) RegistryLog() (string, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "logs", "registry.log"))
	return string(b), err
}

// removeRegistryStorage removes the storage folder a run recorded.
func removeRegistryStorage(dir string, warn func(string, ...any)) {
	b, err := os.ReadFile(filepath.Join(dir, registryStorageRecord))
	if err != nil {
		return
	}
	storage := strings.TrimSpace(string(b))
	if !strings.HasPrefix(filepath.Base(storage), "tp-k8s-registry-") {
		warn("not removing %q: not a registry storage folder of the harness", storage)
		return
	}
	if err := os.RemoveAll(storage); err != nil {
		warn("remove the registry's storage %s: %v", storage, err)
	}
}
