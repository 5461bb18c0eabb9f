package sandbox

import (
	"context"
	"net"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/sandbox/launch"
)

// space is the app's network namespace as a run uses it once it is set
// up: a named namespace that root enters with setns, or a rootless run's,
// reached through its holder process.
type space interface {
	// Name names it for messages and Options.Started: the namespace's
	// name, or the holder's /proc path.
	Name() string
	// Path is the namespace's file (bind mount or /proc entry).
	Path() string
	// Dial connects from inside, past the loopback redirect.
	Dial(ctx context.Context, network, address string) (net.Conn, error)
	ListeningPorts() (tcp, udp map[uint16]bool, err error)
	ListenerBypass(add bool, proto string, port uint16) error
}

// namedSpace is a root run's namespace.
type namedSpace struct{ *netns.Namespace }

func (n namedSpace) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return netns.DialInside(ctx, n.Namespace, network, address)
}

func (n namedSpace) ListeningPorts() (tcp, udp map[uint16]bool, err error) {
	return netns.ListeningPorts(n.Namespace)
}

func (n namedSpace) ListenerBypass(add bool, proto string, port uint16) error {
	if add {
		return netns.AddListenerBypass(n.Namespace, proto, port)
	}
	return netns.RemoveListenerBypass(n.Namespace, proto, port)
}

// heldSpace is a rootless run's namespace.
type heldSpace struct{ *launch.Holder }

func (h heldSpace) Name() string { return h.NetnsPath() }
func (h heldSpace) Path() string { return h.NetnsPath() }
