package netns

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// The loopback redirect. Traffic to the app's own loopback never touches a
// link, so NAT in the sandbox's OUTPUT chain rewrites it to an alias the
// default route sends through the TUN, where the router can decide where it
// goes. The router's own sockets (RouterMark) and the app's own listening
// ports (listener bypass rules, inserted at the top) stay on lo.
//
// Both iptables-restore and go-iptables shell out; every call here runs
// inside Do so the child process inherits the namespace.

var markMatch = []string{"-m", "mark", "--mark", fmt.Sprintf("%#x", RouterMark), "-j", "RETURN"}

func newIPTables(proto iptables.Protocol) (*iptables.IPTables, error) {
	ipt, err := iptables.New(iptables.IPFamily(proto))
	if err != nil {
		return nil, fmt.Errorf("find %s (install the iptables package): %w", cmdName(proto), err)
	}
	return ipt, nil
}

func cmdName(proto iptables.Protocol) string {
	if proto == iptables.ProtocolIPv6 {
		return "ip6tables"
	}
	return "iptables"
}

// installLoopbackRules sets the sandbox's nat table to the redirect for one
// IP family, in one iptables-restore: one process instead of a dozen
// iptables calls (each an exec that costs milliseconds of the run's
// start-up), and applied whole or not at all. The table is replaced, not
// added to: the namespace is the sandbox's own and new, and a second call
// leaves the same rules rather than duplicates. Call inside Do.
func installLoopbackRules(proto iptables.Protocol, link string) error {
	if err := IPTablesRestore(proto, loopbackRuleset(proto, link), false); err != nil {
		return fmt.Errorf("set the nat table's %s redirect: %w", LoopbackChain, err)
	}
	return nil
}

// IPTablesRestore applies ruleset (iptables-save's format) in one
// iptables-restore or ip6tables-restore, whole or not at all: one process
// instead of an iptables exec per rule, each milliseconds of a run's
// start-up. noflush adds to (or deletes from) the tables named instead of
// replacing them. It works in the calling thread's namespace: for a
// namespace's own, call it inside Do.
func IPTablesRestore(proto iptables.Protocol, ruleset string, noflush bool) error {
	name := cmdName(proto) + "-restore"
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("find %s (install the iptables package): %w", name, err)
	}
	args := []string{"--wait"}
	if noflush {
		args = append(args, "--noflush")
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s of\n%s: %w: %s", name, ruleset, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// loopbackRuleset is installLoopbackRules' nat table, in iptables-save's
// format.
func loopbackRuleset(proto iptables.Protocol, link string) string {
	var redirect [][]string
	var lo string
	if proto == iptables.ProtocolIPv6 {
		lo = "::1/128"
		for _, p := range []string{"tcp", "udp"} {
			redirect = append(redirect, []string{"-d", lo, "-p", p, "-j", "DNAT", "--to-destination", LoopbackAlias6.String()})
		}
	} else {
		lo = "127.0.0.0/8"
		for _, p := range []string{"tcp", "udp"} {
			redirect = append(redirect, []string{"-d", LoopbackNet4.String(), "-p", p, "-j", "NETMAP", "--to", LoopbackAlias4.String()})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", LoopbackChain)
	for _, r := range append([][]string{markMatch}, redirect...) {
		fmt.Fprintf(&b, "-A %s %s\n", LoopbackChain, strings.Join(r, " "))
	}
	fmt.Fprintf(&b, "-A OUTPUT -j %s\n", LoopbackChain)
	// The redirected packets still carry a loopback source, which the router
	// could not answer; give them the sandbox's own address.
	fmt.Fprintf(&b, "-A POSTROUTING -o %s -s %s -j MASQUERADE\n", link, lo)
	b.WriteString("COMMIT\n")
	return b.String()
}

func bypassRule(proto string, port uint16) ([]string, error) {
	if proto != "tcp" && proto != "udp" {
		return nil, fmt.Errorf("listener bypass: proto %q is invalid: want \"tcp\" or \"udp\"", proto)
	}
	if port == 0 {
		return nil, fmt.Errorf("listener bypass: port 0 is invalid: want 1-65535")
	}
	return []string{"-p", proto, "--dport", strconv.Itoa(int(port)), "-j", "RETURN"}, nil
}

// AddListenerBypass keeps the app's loopback traffic to its own listening
// port inside the sandbox: it inserts `-p PROTO --dport PORT -j RETURN` at
// the top of LoopbackChain (IPv4, and IPv6 where the chain exists). Adding
// a bypass that exists already is a no-op. proto is "tcp" or "udp".
func AddListenerBypass(n *Namespace, proto string, port uint16) error {
	return n.Do(func() error { return ListenerBypassHere(n.name, true, proto, port) })
}

// ListenerBypassHere adds (add) or removes the listener bypass in the
// calling thread's namespace, named name in errors: for a process that
// runs wholly inside the sandbox (the rootless holder).
func ListenerBypassHere(name string, add bool, proto string, port uint16) error {
	rule, err := bypassRule(proto, port)
	if err != nil {
		return err
	}
	if !add {
		return forEachFamilyHere(name, func(ipt *iptables.IPTables) error {
			return ipt.DeleteIfExists("nat", LoopbackChain, rule...)
		}, fmt.Sprintf("remove listener bypass %s/%d", proto, port))
	}
	return forEachFamilyHere(name, func(ipt *iptables.IPTables) error {
		ok, err := ipt.Exists("nat", LoopbackChain, rule...)
		if err != nil || ok {
			return err
		}
		return ipt.Insert("nat", LoopbackChain, 1, rule...)
	}, fmt.Sprintf("add listener bypass %s/%d", proto, port))
}

// RemoveListenerBypass deletes what AddListenerBypass inserted; a missing
// rule is not an error.
func RemoveListenerBypass(n *Namespace, proto string, port uint16) error {
	return n.Do(func() error { return ListenerBypassHere(n.name, false, proto, port) })
}

// forEachFamilyHere runs fn for each IP family whose LoopbackChain exists
// in the calling thread's namespace (IPv6 is absent when the sandbox was
// set up without it), named name in errors.
func forEachFamilyHere(name string, fn func(*iptables.IPTables) error, what string) error {
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := newIPTables(proto)
		if err != nil {
			return fmt.Errorf("%s in netns %q: %w", what, name, err)
		}
		ok, err := ipt.ChainExists("nat", LoopbackChain)
		if err != nil {
			return fmt.Errorf("%s in netns %q: %s: %w", what, name, cmdName(proto), err)
		}
		if !ok {
			if proto == iptables.ProtocolIPv4 {
				return fmt.Errorf("%s in netns %q: nat chain %s is missing (was SetupSandbox run?)", what, name, LoopbackChain)
			}
			continue
		}
		if err := fn(ipt); err != nil {
			return fmt.Errorf("%s in netns %q: %s: %w", what, name, cmdName(proto), err)
		}
	}
	return nil
}
