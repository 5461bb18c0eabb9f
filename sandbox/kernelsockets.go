package sandbox

import (
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
	taker socketTaker
}

// socketTaker is what kernel sockets need of the app's namespace: a root
// run's enters it, a rootless run's asks its holder (only a process inside
// its user namespace may bind the queue and add rules there).
type socketTaker interface {
	SYNQueue(num uint16) (*synqueue.Queue, error)
	ListenLoopback(network string, port uint16) (*net.TCPListener, error)
	InstallSYNRules(r synqueue.Rules) error
}

// openKernelSockets binds the SYN queue and opens the listeners inside the
// run's namespace; nil when the run takes its connections through the
// netstack only (--no-kernel-sockets, or set-up failed: the failure is
// logged and the run goes on as before).
func openKernelSockets(ns space, o Options) *kernelSockets {
	taker, ok := ns.(socketTaker)
	if !ok || o.NoKernelSockets {
		return nil
	}
	ks, err := openKernelSocketsIn(o.runID, taker, o.NoIPv6)
	if err != nil {
		o.Logger.Warn("kernel sockets off: new connections go through the netstack", "err", err)
		return nil
	}
	return ks
}

func openKernelSocketsIn(id string, taker socketTaker, noIPv6 bool) (ks *kernelSockets, err error) {
	ks = &kernelSockets{taker: taker}
	defer func() {
		if err != nil {
			ks.close()
		}
	}()
	if ks.Queue, err = taker.SYNQueue(synQueueNum); err != nil {
		return nil, err
	}
	ks.Marks = synqueue.DefaultMarks
	ln4, err := taker.ListenLoopback("tcp4", 0)
	if err != nil {
		return nil, err
	}
	ks.Listeners = append(ks.Listeners, ln4)
	if !noIPv6 {
		ln6, err := taker.ListenLoopback("tcp6", ks.port())
		if err != nil {
			return nil, err
		}
		ks.Listeners = append(ks.Listeners, ln6)
	}
	ks.rules = synqueue.Rules{RunID: id, Link: netns.LinkName, Queue: synQueueNum,
		TakePort: ks.port(), Marks: ks.Marks, NoIPv6: noIPv6}
	return ks, nil
}

func (n namedSpace) SYNQueue(num uint16) (*synqueue.Queue, error) {
	return synqueue.Open(n.Namespace, synqueue.Config{Num: num})
}

// ListenLoopback is netns.ListenLoopbackHere inside n, where the socket
// stays.
func (n namedSpace) ListenLoopback(network string, port uint16) (ln *net.TCPListener, err error) {
	err = n.Do(func() error {
		ln, err = netns.ListenLoopbackHere(network, port)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("inside %s: %w", n.Namespace, err)
	}
	return ln, nil
}

func (n namedSpace) InstallSYNRules(r synqueue.Rules) error { return r.Install(n.Namespace) }

// port is the listeners' port, the rules' TakePort.
func (ks *kernelSockets) port() uint16 {
	return uint16(ks.Listeners[0].Addr().(*net.TCPAddr).Port)
}

// install adds the rules that send SYNs to the queue; call it once the
// router reads the queue and accepts on the listeners. Until then, and
// when it fails, SYNs go to the TUN.
func (ks *kernelSockets) install() error {
	return ks.taker.InstallSYNRules(ks.rules)
}

// close releases what the router does not own yet; nothing was queued or
// accepted, so there is nothing their errors could lose.
func (ks *kernelSockets) close() {
	if ks.Queue != nil {
		_ = ks.Queue.Close()
	}
	for _, ln := range ks.Listeners {
		_ = ln.Close()
	}
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
