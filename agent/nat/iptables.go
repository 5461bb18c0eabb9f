package nat

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// The iptables backend: per family, a chain TP-IN-<id> in the nat table,
// jumped to from the top of PREROUTING and OUTPUT, holding
//
//	-m mark --mark 0x7471 -j RETURN
//	-p tcp --syn --dport P -m addrtype --dst-type LOCAL -j REDIRECT --to-ports L   (per port)
//
// written by the iptables and ip6tables binaries (coreos/go-iptables).

type iptFamily struct {
	ipt  *iptables.IPTables
	name string // iptables or ip6tables
	to   uint16 // the agent's redirect listener port for this family
}

// iptablesRules is one agent's chains.
type iptablesRules struct {
	chain string
	fams  []iptFamily

	mu    sync.Mutex
	ports map[uint16]bool
}

var markReturn = []string{"-m", "mark", "--mark", fmt.Sprintf("%#x", Mark), "-j", "RETURN"}

// redirectRule matches SYNs only: where the pod's namespace had no
// conntrack before (no nat rule anywhere), conntrack picks up connections
// that are already open as new from their next packet, and those must not
// be redirected mid-stream.
func redirectRule(port, to uint16) []string {
	return []string{"-p", "tcp", "--syn", "--dport", strconv.Itoa(int(port)), "-m", "addrtype", "--dst-type", "LOCAL",
		"-j", "REDIRECT", "--to-ports", strconv.Itoa(int(to))}
}

// newIPTablesRules checks that the agent can manage its chains (it creates
// and removes them once) and returns the rules, with no chain in place:
// the chains exist only while a port is redirected, so an idle agent
// leaves the pod's nat table as it found it. IPv4 must work; IPv6 is
// skipped (with a log line) where the pod has no ip6tables nat. to4 and
// to6 are the ports of the redirect listeners (to6 0: no IPv6).
func newIPTablesRules(id string, to4, to6 uint16, log *slog.Logger) (*iptablesRules, error) {
	r := &iptablesRules{chain: ChainPrefix + id, ports: map[uint16]bool{}}
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
		r.fams = append(r.fams, iptFamily{ipt: ipt, name: f.name, to: f.to})
	}
	return r, nil
}

func (r *iptablesRules) Kind() Backend { return IPTables }

func (r *iptablesRules) Name() string { return r.chain }

func (r *iptablesRules) Where() string {
	var names []string
	for _, f := range r.fams {
		names = append(names, f.name)
	}
	return fmt.Sprintf("nat chain %s (%s)", r.chain, strings.Join(names, ", "))
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
			_ = deleteChain(ipt, chain)
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

func (r *iptablesRules) Add(port uint16) error {
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

func (r *iptablesRules) Remove(port uint16) error {
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
func (r *iptablesRules) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, f := range r.fams {
		if err := deleteChain(f.ipt, r.chain); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	r.fams = nil
	r.ports = map[uint16]bool{}
	return errors.Join(errs...)
}

// sweepStaleChains removes the chains (and jumps) of agents that died
// without removing them, and returns their names. A live agent's chains
// are left alone. A namespace without a usable iptables has none to sweep.
func sweepStaleChains(self string, log *slog.Logger) ([]string, error) {
	var removed []string
	var errs []error
	for _, p := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.New(iptables.IPFamily(p), iptables.Timeout(10))
		if err != nil {
			continue // no binary: no chains of any agent either
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
