package k8s

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func criClient() (runtimeapi.RuntimeServiceClient, func(), error) {
	conn, err := grpc.NewClient("unix://"+ContainerdSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to containerd's CRI at %s: %w", ContainerdSocket, err)
	}
	return runtimeapi.NewRuntimeServiceClient(conn), func() { conn.Close() }, nil
}

// checkContainerd makes sure the machine's containerd runs with its CRI
// plugin, starting it with .ci/containerd.sh when nothing answers.
func checkContainerd() error {
	if _, err := os.Stat(ContainerdSocket); err != nil {
		script, ferr := findRepoFile(".ci/containerd.sh")
		if ferr != nil {
			return fmt.Errorf("containerd is not running (%s missing) and .ci/containerd.sh was not found: %w", ContainerdSocket, ferr)
		}
		if out, err := exec.Command("bash", script, "start").CombinedOutput(); err != nil {
			return fmt.Errorf("start containerd with %s: %w\n%s", script, err, out)
		}
	}
	rt, done, err := criClient()
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return fmt.Errorf("containerd at %s does not serve the CRI (%w): restart it with its CRI plugin: "+
			"`.ci/containerd.sh stop; .ci/containerd.sh start`", ContainerdSocket, err)
	}
	for _, c := range st.GetStatus().GetConditions() {
		if c.Type == runtimeapi.RuntimeReady && !c.Status {
			return fmt.Errorf("containerd's CRI runtime is not ready: %s", c.Message)
		}
	}
	return nil
}

// removeSandboxes stops and removes every CRI pod sandbox (and so every
// container and network namespace of the cluster's pods) while the CNI
// configuration is still there to release their addresses. The harness
// owns containerd's "k8s.io" namespace for as long as its cluster runs.
func removeSandboxes(log io.Writer) {
	rt, done, err := criClient()
	if err != nil {
		return
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	boxes, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	for _, b := range boxes.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: b.Id}); err != nil {
			fmt.Fprintf(log, "k8s harness: teardown: stop pod sandbox %s (%s): %v\n", b.Id[:12], b.GetMetadata().GetName(), err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: b.Id}); err != nil {
			fmt.Fprintf(log, "k8s harness: teardown: remove pod sandbox %s (%s): %v\n", b.Id[:12], b.GetMetadata().GetName(), err)
		}
	}
}

// findRepoFile finds rel in the module root above the working directory.
func findRepoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return p, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s not found above the working directory", rel)
		}
		dir = parent
	}
}
