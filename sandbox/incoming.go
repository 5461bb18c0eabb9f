package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/config"
)

// IncomingAgent is what incoming traffic needs of the agent's client;
// *client.Client has it.
type IncomingAgent interface {
	// IncomingError says why the agent cannot steal or mirror ("" if it can).
	IncomingError() string
	Subscribe(ctx context.Context, o client.SubscribeOptions) (*client.Subscription, error)
}

// incoming steals or mirrors the pod's ports while the app listens on
// them: the listener watch reports the app's TCP ports, and each one the
// configuration takes becomes a subscription at the agent, whose
// connections are dialed to the app inside the sandbox.
type incoming struct {
	cfg      config.Incoming
	mode     client.Mode
	agent    IncomingAgent
	ns       space
	progress *Progress
	log      *slog.Logger

	updates chan map[uint16]bool // the latest set of the app's TCP ports
	done    chan struct{}
	cancel  context.CancelFunc

	mu      sync.Mutex
	stopped bool
	subs    map[uint16]*client.Subscription // by the app's port
	failed  map[uint16]bool                 // refused; retried when the app listens anew
}

// newIncoming checks that the agent can do what the configuration asks;
// nil (and no error) when there is nothing to do. An agent that cannot
// steal is an error (the user asked for the pod's traffic); one that
// cannot mirror, mirrord's default, is only a note.
func newIncoming(ns space, o Options, agent IncomingAgent) (*incoming, error) {
	cfg := o.Incoming
	if cfg.Mode == "" || cfg.Mode == config.ModeOff || agent == nil {
		return nil, nil
	}
	mode := client.Mirror
	if cfg.Mode == config.ModeSteal {
		mode = client.Steal
	}
	if why := agent.IncomingError(); why != "" {
		if mode == client.Steal {
			return nil, fmt.Errorf("feature.network.incoming is \"steal\", but the agent cannot steal the pod's traffic: %s; "+
				"give the agent's container the NET_ADMIN capability, or set feature.network.incoming to \"off\"", why)
		}
		o.Progress.Note("no mirroring of the pod's incoming traffic: %s (set feature.network.incoming to \"off\" to silence this)", why)
		return nil, nil
	}
	for i, pair := range cfg.PortMapping {
		for _, q := range cfg.PortMapping[:i] {
			if q[0] == pair[0] {
				return nil, fmt.Errorf("feature.network.incoming.port_mapping[%d] maps local port %d again (first mapped to %d): give each local port one remote port", i, pair[0], q[1])
			}
		}
	}
	return &incoming{
		cfg: cfg, mode: mode, agent: agent, ns: ns, progress: o.Progress, log: o.Logger,
		updates: make(chan map[uint16]bool, 1), done: make(chan struct{}),
		subs: map[uint16]*client.Subscription{}, failed: map[uint16]bool{},
	}, nil
}

// remotePort is the pod's port for the app's port, and whether the
// configuration takes it: port_mapping gives the pod's port, "ports" lists
// the pod ports to take, "ignore_ports" the ports (the app's or the pod's)
// to leave alone.
func (in *incoming) remotePort(local uint16) (uint16, bool) {
	remote := local
	for _, pair := range in.cfg.PortMapping {
		if pair[0] == local {
			remote = pair[1]
			break
		}
	}
	if len(in.cfg.Ports) > 0 && !slices.Contains(in.cfg.Ports, remote) {
		return remote, false
	}
	if slices.Contains(in.cfg.IgnorePorts, local) || slices.Contains(in.cfg.IgnorePorts, remote) {
		return remote, false
	}
	return remote, true
}

// filterFor is the HTTP filter for a pod port (the zero filter: whole
// connections).
func (in *incoming) filterFor(remote uint16) config.HTTPFilter {
	f := in.cfg.HTTPFilter
	if f == nil || (len(f.Ports) > 0 && !slices.Contains(f.Ports, remote)) {
		return config.HTTPFilter{}
	}
	return *f
}

// start reconciles the subscriptions with the app's ports until stop.
func (in *incoming) start(ctx context.Context) {
	ctx, in.cancel = context.WithCancel(ctx)
	go func() {
		defer close(in.done)
		for {
			select {
			case <-ctx.Done():
				return
			case ports := <-in.updates:
				in.reconcile(ctx, ports)
			}
		}
	}()
}

// update hands over the app's current TCP ports; it never blocks (only
// the latest set matters).
func (in *incoming) update(tcp map[uint16]bool) {
	ports := make(map[uint16]bool, len(tcp))
	for p := range tcp {
		ports[p] = true
	}
	for {
		select {
		case in.updates <- ports:
			return
		default:
		}
		select {
		case <-in.updates: // drop the stale set
		default:
		}
	}
}

func (in *incoming) reconcile(ctx context.Context, ports map[uint16]bool) {
	var locals []int
	for p := range ports {
		locals = append(locals, int(p))
	}
	sort.Ints(locals)
	for _, lp := range locals {
		local := uint16(lp)
		in.mu.Lock()
		skip := in.stopped || in.subs[local] != nil || in.failed[local]
		in.mu.Unlock()
		if skip {
			continue
		}
		remote, take := in.remotePort(local)
		if !take {
			continue
		}
		in.subscribe(ctx, local, remote)
	}
	in.mu.Lock()
	var gone []uint16
	for local := range in.subs {
		if !ports[local] {
			gone = append(gone, local)
		}
	}
	for local := range in.failed {
		if !ports[local] {
			delete(in.failed, local)
		}
	}
	in.mu.Unlock()
	for _, local := range gone {
		in.unsubscribe(local, "the app stopped listening")
	}
}

func (in *incoming) subscribe(ctx context.Context, local, remote uint16) {
	filter := in.filterFor(remote)
	verb := "stealing"
	if in.mode == client.Mirror {
		verb = "mirroring"
	}
	what := fmt.Sprintf("%s pod port %d → app :%d", verb, remote, local)
	if d := client.DescribeFilter(filter); d != "" {
		what += " (HTTP requests with " + d + ")"
	}
	done := in.progress.Step(what)
	sub, err := in.agent.Subscribe(ctx, client.SubscribeOptions{
		Mode: in.mode, Port: remote, Filter: filter,
		Dial: func(ctx context.Context, _ client.IncomingConn) (net.Conn, error) { return in.dialApp(ctx, local) },
	})
	done(err)
	in.mu.Lock()
	defer in.mu.Unlock()
	if err != nil {
		in.failed[local] = true
		return
	}
	if in.stopped {
		go sub.Close()
		return
	}
	in.subs[local] = sub
}

// dialApp reaches the app's port inside the sandbox, on 127.0.0.1 (which a
// listener on any IPv4 address, or only on loopback, takes) or else ::1.
func (in *incoming) dialApp(ctx context.Context, port uint16) (net.Conn, error) {
	p := strconv.Itoa(int(port))
	c, err := in.ns.Dial(ctx, "tcp", "127.0.0.1:"+p)
	if err == nil {
		return c, nil
	}
	c, err6 := in.ns.Dial(ctx, "tcp", "[::1]:"+p)
	if err6 == nil {
		return c, nil
	}
	return nil, errors.Join(err, err6)
}

func (in *incoming) unsubscribe(local uint16, why string) {
	in.mu.Lock()
	sub := in.subs[local]
	delete(in.subs, local)
	in.mu.Unlock()
	if sub == nil {
		return
	}
	sub.Close()
	remote, _ := in.remotePort(local)
	in.progress.Note("stopped taking pod port %d: %s", remote, why)
}

// stop ends every subscription; the agent gives the ports back to the pod.
func (in *incoming) stop() {
	in.mu.Lock()
	in.stopped = true
	in.mu.Unlock()
	if in.cancel != nil {
		in.cancel()
		<-in.done
	}
	in.mu.Lock()
	subs := in.subs
	in.subs = map[uint16]*client.Subscription{}
	in.mu.Unlock()
	var wg sync.WaitGroup
	for _, sub := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub.Close()
		}()
	}
	wg.Wait()
}
