package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// The pod's nat rules for steal and mirror. While it redirects at least one
// port, an agent has one chain per IP family, named for its id, jumped to
// from the top of nat
// PREROUTING (connections from other hosts) and OUTPUT (from the pod
// itself, over loopback or to its own address). The chain first RETURNs
// packets that carry AgentMark (the agent's own sockets: pass-through and
// outgoing dials), then holds one REDIRECT per subscribed port, for new
// TCP connections (SYNs) to a local address of the pod. nat sees only the
// first packet of a connection, so connections open before a rule exists
// keep going where they went.

// AgentMark is the socket mark (SO_MARK) of the agent's own sockets; every
// agent's chain lets them through, so an agent never steals from itself or
// from another agent.
const AgentMark = 0x7471

// ChainPrefix starts the name of every agent's nat chain; the agent's id
// follows.
const ChainPrefix = "TP-IN-"

// livenessPrefix names the abstract unix socket each agent holds for its
// life: abstract sockets belong to the network namespace, as the chains do,
// and vanish with the process, so another agent can tell a live agent's
// chains from a dead one's even across PID namespaces.
const livenessPrefix = "@trafficpolice-agent-"

// portRules adds and removes the redirect of one pod port; natRules is the
// real one, tests use their own.
type portRules interface {
	add(port uint16) error
	remove(port uint16) error
}

type natFamily struct {
	ipt  *iptables.IPTables
	name string // iptables or ip6tables
	to   uint16 // the agent's redirect listener port for this family
}

// natRules is one agent's chains.
type natRules struct {
	chain string
	fams  []natFamily

	mu    sync.Mutex
	ports map[uint16]bool
}

var markReturn = []string{"-m", "mark", "--mark", fmt.Sprintf("%#x", AgentMark), "-j", "RETURN"}

// redirectRule matches SYNs only: where the pod's namespace had no
// conntrack before (no nat rule anywhere), conntrack picks up connections
// that are already open as new from their next packet, and those must not
// be redirected mid-stream.
func redirectRule(port, to uint16) []string {
	return []string{"-p", "tcp", "--syn", "--dport", strconv.Itoa(int(port)), "-m", "addrtype", "--dst-type", "LOCAL",
		"-j", "REDIRECT", "--to-ports", strconv.Itoa(int(to))}
}

// newNATRules checks that the agent can manage its chains (it creates and
// removes them once) and returns the rules, with no chain in place: the
// chains exist only while a port is redirected, so an idle agent leaves
// the pod's nat table as it found it. IPv4 must work; IPv6 is skipped (with
// a log line) where the pod has no ip6tables nat. to4 and to6 are the ports
// of the redirect listeners (to6 0: no IPv6).
func newNATRules(id string, to4, to6 uint16, log *slog.Logger) (*natRules, error) {
	r := &natRules{chain: ChainPrefix + id, ports: map[uint16]bool{}}
	for _, f := range []struct {
		proto iptables.Protocol
		name  string
		to    uint16
	}{{iptables.ProtocolIPv4, "iptables", to4}, {iptables.ProtocolIPv6, "ip6tables", to6}} {
		if f.to == 0 {
			continue
		}
		ipt, err := iptables.New(iptables.IPFamily(f.proto), iptables.Timeout(10))
		if err == nil {
			if err = setupChain(ipt, r.chain); err == nil {
				err = deleteChain(ipt, r.chain)
			}
		}
		if err != nil {
			if f.proto == iptables.ProtocolIPv6 {
				log.Warn("no IPv6 steal or mirror: ip6tables nat is not usable in this pod", "err", err)
				continue
			}
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		r.fams = append(r.fams, natFamily{ipt: ipt, name: f.name, to: f.to})
	}
	return r, nil
}

func setupChain(ipt *iptables.IPTables, chain string) error {
	// ClearChain creates the chain, or empties one a namesake left.
	if err := ipt.ClearChain("nat", chain); err != nil {
		return fmt.Errorf("create nat chain %s: %w", chain, err)
	}
	if err := ipt.Append("nat", chain, markReturn...); err != nil {
		_ = ipt.ClearAndDeleteChain("nat", chain)
		return fmt.Errorf("add the mark rule to nat chain %s: %w", chain, err)
	}
	for _, hook := range []string{"PREROUTING", "OUTPUT"} {
		if err := ipt.InsertUnique("nat", hook, 1, "-j", chain); err != nil {
			deleteChain(ipt, chain)
			return fmt.Errorf("jump from nat %s to %s: %w", hook, chain, err)
		}
	}
	return nil
}

// deleteChain removes the jumps to chain and the chain, as far as it can.
func deleteChain(ipt *iptables.IPTables, chain string) error {
	ok, err := ipt.ChainExists("nat", chain)
	if err != nil || !ok {
		return err // without the chain there is no jump to it either
	}
	var errs []error
	for _, hook := range []string{"PREROUTING", "OUTPUT"} {
		if err := ipt.DeleteIfExists("nat", hook, "-j", chain); err != nil {
			errs = append(errs, fmt.Errorf("remove jump from nat %s to %s: %w", hook, chain, err))
		}
	}
	if err := ipt.ClearAndDeleteChain("nat", chain); err != nil {
		errs = append(errs, fmt.Errorf("delete nat chain %s: %w", chain, err))
	}
	return errors.Join(errs...)
}

func (r *natRules) add(port uint16) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ports[port] {
		return nil
	}
	if len(r.ports) == 0 {
		for i, f := range r.fams {
			if err := setupChain(f.ipt, r.chain); err != nil {
				for _, g := range r.fams[:i] {
					_ = deleteChain(g.ipt, r.chain)
				}
				return fmt.Errorf("%s: %w", f.name, err)
			}
		}
	}
	for i, f := range r.fams {
		if err := f.ipt.AppendUnique("nat", r.chain, redirectRule(port, f.to)...); err != nil {
			for _, g := range r.fams[:i] {
				_ = g.ipt.DeleteIfExists("nat", r.chain, redirectRule(port, g.to)...)
			}
			if len(r.ports) == 0 {
				for _, g := range r.fams {
					_ = deleteChain(g.ipt, r.chain)
				}
			}
			return fmt.Errorf("%s: redirect port %d in nat chain %s: %w", f.name, port, r.chain, err)
		}
	}
	r.ports[port] = true
	return nil
}

func (r *natRules) remove(port uint16) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	delete(r.ports, port)
	for _, f := range r.fams {
		var err error
		if len(r.ports) == 0 {
			err = deleteChain(f.ipt, r.chain) // the last one: leave nothing
		} else {
			err = f.ipt.DeleteIfExists("nat", r.chain, redirectRule(port, f.to)...)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: remove the redirect of port %d: %w", f.name, port, err))
		}
	}
	return errors.Join(errs...)
}

// close removes the chains and the jumps to them.
func (r *natRules) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, f := range r.fams {
		if err := deleteChain(f.ipt, r.chain); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	r.fams = nil
	return errors.Join(errs...)
}

// holdLiveness binds the agent's abstract socket and answers connections
// to it until it is closed.
func holdLiveness(id string) (net.Listener, error) {
	ln, err := net.Listen("unix", livenessPrefix+id)
	if err != nil {
		return nil, fmt.Errorf("bind the agent's liveness socket %s: %w", livenessPrefix+id, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln, nil
}

// agentAlive reports whether the agent with that id still holds its
// liveness socket in this network namespace.
func agentAlive(id string) bool {
	c, err := net.DialTimeout("unix", livenessPrefix+id, time.Second)
	if err != nil {
		// Only "nobody there" means dead; anything else, keep its chains.
		return !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT)
	}
	_ = c.Close()
	return true
}

// sweepStaleChains removes the chains (and jumps) of agents that died
// without removing them, and returns their names. A live agent's chains
// are left alone.
func sweepStaleChains(self string, log *slog.Logger) ([]string, error) {
	var removed []string
	var errs []error
	for _, p := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.New(iptables.IPFamily(p), iptables.Timeout(10))
		if err != nil {
			continue
		}
		chains, err := ipt.ListChains("nat")
		if err != nil {
			if p == iptables.ProtocolIPv4 {
				errs = append(errs, fmt.Errorf("list nat chains: %w", err))
			}
			continue
		}
		for _, ch := range chains {
			id, ok := strings.CutPrefix(ch, ChainPrefix)
			if !ok || id == self || agentAlive(id) {
				continue
			}
			if err := deleteChain(ipt, ch); err != nil {
				errs = append(errs, err)
				continue
			}
			log.Info("removed the nat chain of an agent that is gone", "chain", ch)
			removed = append(removed, ch)
		}
	}
	return removed, errors.Join(errs...)
}
