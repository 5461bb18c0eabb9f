package enter

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sockets of the container runtimes, by the scheme of a pod status's
// containerID ("containerd://abc…").
var Sockets = map[string]string{
	"containerd": "/run/containerd/containerd.sock",
	"cri-o":      "/var/run/crio/crio.sock",
}

// SplitID splits "containerd://abc" into the runtime's socket and the id.
func SplitID(containerID string) (socket, id string, err error) {
	scheme, id, ok := strings.Cut(containerID, "://")
	if !ok || id == "" {
		return "", "", fmt.Errorf("container id %q is not RUNTIME://ID", containerID)
	}
	socket, ok = Sockets[scheme]
	if !ok {
		return "", "", fmt.Errorf("container id %q: runtime %q is not supported: use containerd or cri-o", containerID, scheme)
	}
	return socket, id, nil
}

// PID asks the CRI at socket for the PID of the container's first process.
func PID(ctx context.Context, socket, id string) (int, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, fmt.Errorf("connect to the container runtime at %s: %w", socket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := runtimeapi.NewRuntimeServiceClient(conn).ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return 0, fmt.Errorf("ask the container runtime at %s about container %s: %w", socket, id, err)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil || info.PID <= 0 {
		return 0, fmt.Errorf("the container runtime at %s gave no pid for container %s (info: %.200q)", socket, id, st.GetInfo()["info"])
	}
	return info.PID, nil
}

// ExecIn replaces this process with argv running in the network and UTS
// namespaces of pid: the pod's network, and its hostname, which the agent
// reports to its clients as the pod's. Namespaces belong to threads: setns
// on one locked thread, then execve from it, leaves the new program
// wholly inside. It returns only on failure.
func ExecIn(pid int, argv, env []string) error {
	runtime.LockOSThread() // never unlocked: this thread leaves with execve
	for _, ns := range []struct {
		name string
		flag int
	}{{"net", unix.CLONE_NEWNET}, {"uts", unix.CLONE_NEWUTS}} {
		if err := setns(pid, ns.name, ns.flag); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the agent's own binary: %w", err)
	}
	if err := unix.Exec(self, argv, env); err != nil {
		return fmt.Errorf("re-execute the agent in the target's namespaces: %w", err)
	}
	return nil
}

// setns moves the calling thread into pid's namespace called name.
func setns(pid int, name string, flag int) error {
	path := fmt.Sprintf("/proc/%d/ns/%s", pid, name)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the target's %s namespace %s: %w (the agent needs hostPID and privileges)", name, path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, flag); err != nil {
		return fmt.Errorf("enter the target's %s namespace %s: %w", name, path, err)
	}
	return nil
}
