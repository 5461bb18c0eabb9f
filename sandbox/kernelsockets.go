package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/synqueue"
	"github.com/trafficpolice/trafficpolice/router"
)

// synQueueNum is the sandbox's SYN queue number; queues are per namespace,
// so every run can use the same one.
const synQueueNum = 7470

// kernelSockets is a run's SYN queue and listeners before the router owns
// them, and the rules that feed them, installed once the router reads.
type kernelSockets struct {
	router.KernelSockets
	rules synqueue.Rules
	ns    *netns.Namespace
}

// openKernelSockets binds the SYN queue and opens the listeners inside a
// root run's namespace; nil when the run takes its connections through the
// netstack only (rootless, --no-kernel-sockets, or set-up failed: the
// failure is logged and the run goes on as before).
func openKernelSockets(ns space, o Options) *kernelSockets {
	named, ok := ns.(namedSpace)
	if !ok || o.NoKernelSockets {
		return nil
	}
	ks, err := openKernelSocketsIn(o.runID, named.Namespace, o.NoIPv6)
	if err != nil {
		o.Logger.Warn("kernel sockets off: new connections go through the netstack", "err", err)
		return nil
	}
	return ks
}

func openKernelSocketsIn(id string, ns *netns.Namespace, noIPv6 bool) (ks *kernelSockets, err error) {
	ks = &kernelSockets{ns: ns}
	defer func() {
		if err != nil {
			ks.close()
		}
	}()
	ks.Queue, err = synqueue.Open(ns, synqueue.Config{Num: synQueueNum})
	if err != nil {
		return nil, err
	}
	ks.Marks = synqueue.DefaultMarks
	// The sockets stay in the namespace they were made in.
	err = ns.Do(func() error {
		ln4, err := listenTake("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ks.Listeners = append(ks.Listeners, ln4)
		if noIPv6 {
			return nil
		}
		ln6, err := listenTake("tcp6", net.JoinHostPort("::1", fmt.Sprint(ln4.Addr().(*net.TCPAddr).Port)))
		if err != nil {
			return err
		}
		ks.Listeners = append(ks.Listeners, ln6)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel sockets' listener in %s: %w", ns, err)
	}
	ks.rules = synqueue.Rules{RunID: id, Link: netns.LinkName, Queue: synQueueNum,
		TakePort: ks.port(), Marks: ks.Marks, NoIPv6: noIPv6}
	return ks, nil
}

// listenTake opens one of the listeners. Without Go's default keepalive
// on accepted connections: four setsockopt calls per connection, for an
// app socket in the same namespace (the dialed side gets keepalive once
// the flow has lasted, as every router flow).
func listenTake(network, addr string) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln.(*net.TCPListener), nil
}

// port is the listeners' port, the rules' TakePort.
func (ks *kernelSockets) port() uint16 {
	return uint16(ks.Listeners[0].Addr().(*net.TCPAddr).Port)
}

// install adds the rules that send SYNs to the queue; call it once the
// router reads the queue and accepts on the listeners. Until then, and
// when it fails, SYNs go to the TUN.
func (ks *kernelSockets) install() error {
	return ks.rules.Install(ks.ns)
}

// close releases what the router does not own yet.
func (ks *kernelSockets) close() {
	var errs []error
	if ks.Queue != nil {
		errs = append(errs, ks.Queue.Close())
	}
	for _, ln := range ks.Listeners {
		errs = append(errs, ln.Close())
	}
	_ = errors.Join(errs...) // nothing was queued or accepted yet
}

// hidePort is a space whose listening TCP ports leave out the kernel
// sockets' listener: it is the router's, not the app's, so it gets no
// listener bypass and no incoming traffic.
type hidePort struct {
	space
	port uint16
}

func (h hidePort) ListeningPorts() (tcp, udp map[uint16]bool, err error) {
	tcp, udp, err = h.space.ListeningPorts()
	delete(tcp, h.port)
	return tcp, udp, err
}
