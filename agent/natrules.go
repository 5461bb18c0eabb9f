package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"
)

// The pod's nat rules for steal and mirror. While it redirects at least one
// port, an agent has rules of its own per IP family, named for its id
// (ChainPrefix + id), hooked into nat prerouting (connections from other
// hosts) and output (from the pod itself, over loopback or to its own
// address). They first let through packets that carry AgentMark (the
// agent's own sockets: pass-through and outgoing dials), then redirect,
// per subscribed port, new TCP connections (SYNs) to a local address of
// the pod to the agent's listener. nat sees only the first packet of a
// connection, so connections open before a rule exists keep going where
// they went.
//
// Two backends write the same rules: iptables.go runs the iptables
// binaries (chains in the nat table), nftables.go speaks nf_tables
// netlink (a table per family), for pods without an iptables binary, such
// as the agent's own image.

// AgentMark is the socket mark (SO_MARK) of the agent's own sockets; every
// agent's rules let them through, so an agent never steals from itself or
// from another agent.
const AgentMark = 0x7471

// ChainPrefix starts the name of every agent's nat chain (iptables) or
// table (nftables); the agent's id follows.
const ChainPrefix = "TP-IN-"

// livenessPrefix names the abstract unix socket each agent holds for its
// life: abstract sockets belong to the network namespace, as the rules do,
// and vanish with the process, so another agent can tell a live agent's
// rules from a dead one's even across PID namespaces.
const livenessPrefix = "@trafficpolice-agent-"

// portRules adds and removes the redirect of one pod port; the backends
// are the real ones, tests use their own.
type portRules interface {
	add(port uint16) error
	remove(port uint16) error
}

// NATBackend says how the agent writes its redirect rules into the pod's
// network namespace.
type NATBackend string

// The backends.
const (
	// NATAuto uses the iptables binary when it exists and works in the
	// namespace (hosts, the namespace cluster), nftables otherwise (the
	// agent image, which holds no iptables binary).
	NATAuto NATBackend = "auto"
	// NATIPTables runs the iptables and ip6tables binaries: chains
	// TP-IN-<id> in the nat table, jumped to from PREROUTING and OUTPUT.
	NATIPTables NATBackend = "iptables"
	// NATNFTables speaks nf_tables netlink itself, no binary: tables
	// TP-IN-<id> of families ip and ip6, with nat chains on the
	// prerouting and output hooks.
	NATNFTables NATBackend = "nftables"
)

// EnvNATBackend is the environment variable that `trafficpolice agent`
// takes its --nat-backend default from.
const EnvNATBackend = "TRAFFICPOLICE_NAT_BACKEND"

// ParseNATBackend reads a backend's name; "" is NATAuto.
func ParseNATBackend(s string) (NATBackend, error) {
	switch b := NATBackend(strings.ToLower(strings.TrimSpace(s))); b {
	case "":
		return NATAuto, nil
	case NATAuto, NATIPTables, NATNFTables:
		return b, nil
	}
	return "", fmt.Errorf("%q is not a nat backend: use auto, iptables or nftables", s)
}

// natBackend is the agent's redirect rules in one backend: portRules that
// can also say where they are and remove everything they wrote.
type natBackend interface {
	portRules
	// close removes the agent's rules and whatever refers to them.
	close() error
	// kind is the backend.
	kind() NATBackend
	// name is the chains' or tables' name, ChainPrefix + the agent's id.
	name() string
	// where names the rules as a reader of the pod's ruleset finds them.
	where() string
}

// newNATBackend returns the agent's rules in the backend asked for, after
// checking that it can write them, with nothing in place yet. NATAuto
// takes iptables when it works, else nftables, and fails only when
// neither works, saying why for both.
func newNATBackend(choice NATBackend, id string, to4, to6 uint16, log *slog.Logger) (natBackend, error) {
	switch choice {
	case NATIPTables:
		return newIPTablesRules(id, to4, to6, log)
	case NATNFTables:
		return newNFTRules(id, to4, to6, log)
	case NATAuto, "":
	default:
		return nil, fmt.Errorf("%q is not a nat backend: use auto, iptables or nftables", choice)
	}
	ipt, iptErr := newIPTablesRules(id, to4, to6, log)
	if iptErr == nil {
		return ipt, nil
	}
	nft, nftErr := newNFTRules(id, to4, to6, log)
	if nftErr == nil {
		log.Info("iptables is missing or does not work here: using nftables over netlink", "iptables_err", iptErr)
		return nft, nil
	}
	return nil, fmt.Errorf("neither iptables nor nftables works here: %w", errors.Join(iptErr, nftErr))
}

// sweepStale removes the rules of agents that died without removing them,
// in both backends (a dead agent may have used either), and returns their
// names. A live agent's rules are left alone.
func sweepStale(self string, log *slog.Logger) ([]string, error) {
	chains, iptErr := sweepStaleChains(self, log)
	tables, nftErr := sweepStaleTables(self, log)
	return append(chains, tables...), errors.Join(iptErr, nftErr)
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
		// Only "nobody there" means dead; anything else, keep its rules.
		return !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT)
	}
	_ = c.Close()
	return true
}
