package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	containerd "github.com/containerd/containerd"
)

const (
	// DefaultAddress is containerd's usual socket.
	DefaultAddress = "/run/containerd/containerd.sock"
	// AddressEnv names the environment variable that overrides it, as for
	// ctr and nerdctl.
	AddressEnv = "CONTAINERD_ADDRESS"
	// DefaultNamespace is the containerd namespace our images and
	// containers live in, apart from Docker's ("moby") and Kubernetes'
	// ("k8s.io").
	DefaultNamespace = "trafficpolice"
)

// Address picks the containerd socket: flag if set, else $CONTAINERD_ADDRESS,
// else DefaultAddress.
func Address(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv(AddressEnv); env != "" {
		return env
	}
	return DefaultAddress
}

// NoDaemonError says that no containerd answers at Address, and how to
// start one.
type NoDaemonError struct {
	Address string
	Err     error
}

func (e *NoDaemonError) Error() string {
	return fmt.Sprintf("no containerd answers at %s (%v): start one as root — `containerd &` (Debian: apt-get install containerd runc), "+
		"`systemctl start containerd` where systemd runs, or `.ci/containerd.sh start` in trafficpolice's repository — "+
		"or point --containerd-address or %s at a running one", e.Address, e.Err, AddressEnv)
}

func (e *NoDaemonError) Unwrap() error { return e.Err }

// Connect dials containerd at address and checks that it answers. The
// socket is looked at first, so a missing daemon is reported at once rather
// than after the client's dial timeout.
func Connect(ctx context.Context, address string) (*containerd.Client, error) {
	fi, err := os.Stat(address)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = errors.New("the socket does not exist")
		}
		return nil, &NoDaemonError{Address: address, Err: err}
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return nil, &NoDaemonError{Address: address, Err: errors.New("it is not a socket")}
	}
	client, err := containerd.New(address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, &NoDaemonError{Address: address, Err: err}
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := client.Version(vctx); err != nil {
		client.Close()
		return nil, &NoDaemonError{Address: address, Err: err}
	}
	return client, nil
}
