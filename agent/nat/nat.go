package nat

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Mark is the socket mark (SO_MARK) of the agent's own sockets; every
// agent's rules let them through, so an agent never steals from itself or
// from another agent.
const Mark = 0x7471

// ChainPrefix starts the name of every agent's nat chain (iptables) or
// table (nftables); the agent's id follows.
const ChainPrefix = "TP-IN-"

// livenessPrefix names the abstract unix socket each agent holds for its
// life: abstract sockets belong to the network namespace, as the rules do,
// and vanish with the process, so another agent can tell a live agent's
// rules from a dead one's even across PID namespaces.
const livenessPrefix = "@trafficpolice-agent-"

// PortRules adds and removes the redirect of one pod port; Rules are the
// real ones, tests of the incoming machinery use their own.
type PortRules interface {
	Add(port uint16) error
	Remove(port uint16) error
}

// Backend says how the agent writes its redirect rules into the pod's
// network namespace.
type Backend string

// The backends.
const (
	// Auto uses the iptables binary when it exists and works in the
	// namespace (hosts, the namespace cluster), nftables otherwise (the
	// agent image, which holds no iptables binary).
	Auto Backend = "auto"
	// IPTables runs the iptables and ip6tables binaries: chains
	// TP-IN-<id> in the nat table, jumped to from PREROUTING and OUTPUT.
	IPTables Backend = "iptables"
	// NFTables speaks nf_tables netlink itself, no binary: tables
	// TP-IN-<id> of families ip and ip6, with nat chains on the
	// prerouting and output hooks.
	NFTables Backend = "nftables"
)

// EnvBackend is the environment variable that `trafficpolice agent`
// takes its --nat-backend default from.
const EnvBackend = "TRAFFICPOLICE_NAT_BACKEND"

// ParseBackend reads a backend's name; "" is Auto.
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(strings.ToLower(strings.TrimSpace(s))); b {
	case "":
		return Auto, nil
	case Auto, IPTables, NFTables:
		return b, nil
	}
	return "", fmt.Errorf("%q is not a nat backend: use auto, iptables or nftables", s)
}

// Rules is the agent's redirect rules in one backend: PortRules that can
// also say where they are and remove everything they wrote.
type Rules interface {
	PortRules
	// Close removes the agent's rules and whatever refers to them.
	Close() error
	// Kind is the backend.
	Kind() Backend
	// Name is the chains' or tables' name, ChainPrefix + the agent's id.
	Name() string
	// Where names the rules as a reader of the pod's ruleset finds them.
	Where() string
}

// New returns the agent's rules in the backend asked for, after
// checking that it can write them, with nothing in place yet. Auto
// takes iptables when it works, else nftables, and fails only when
// neither works, saying why for both.
func New(choice Backend, id string, to4, to6 uint16, log *slog.Logger) (Rules, error) {
	switch choice {
	case IPTables:
		return newIPTablesRules(id, to4, to6, log)
	case NFTables:
		return newNFTRules(id, to4, to6, log)
	case Auto, "":
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
func SweepStale(self string, log *slog.Logger) ([]string, error) {
	chains, iptErr := sweepStaleChains(self, log)
	tables, nftErr := sweepStaleTables(self, log)
	return append(chains, tables...), errors.Join(iptErr, nftErr)
}

// agentAlive reports whether the agent with that id still holds its
// liveness socket in this network namespace.
func agentAlive(id string) bool {
	c, err := net.DialTimeout("unix", livenessPrefix+id, time.Second)
	if err != nil {
		// Only "nobody there" means dead; anything else, keep its rules.
		return !nobodyThere(err)
	}
	_ = c.Close()
	return true
}

// nobodyThere says a dial to an agent's liveness socket failed because
// no agent holds it (any more).
func nobodyThere(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// MarkControl marks a socket with Mark (needs NET_ADMIN, which the agent
// has when it steals) so that the nat rules let its connection through.
func MarkControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, Mark)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_MARK %#x: %w", Mark, serr)
	}
	return nil
}

// SoftMarkControl marks like MarkControl but goes on unmarked where the
// agent may not mark (no NET_ADMIN: then it cannot steal either).
func SoftMarkControl(network, address string, c syscall.RawConn) error {
	if err := MarkControl(network, address, c); err != nil && !errors.Is(err, syscall.EPERM) {
		return err
	}
	return nil
}
