package kernelpath

import (
	"errors"
	"fmt"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/vishvananda/netlink"
)

// commentPrefix tags the host's rules of a run: commentPrefix + run id.
const commentPrefix = "trafficpolice-kernel-"

// hostRules are the host's rules for a run: the sandbox's flows leave with
// the host's address, as the router's local dials do, and pass a FORWARD
// policy of DROP (Docker's) the way the router's would not need to.
func hostRules(id, link string, sandbox string) [][3]any {
	c := []string{"-m", "comment", "--comment", commentPrefix + id}
	with := func(r ...string) []string { return append(r, c...) }
	return [][3]any{
		{"nat", "POSTROUTING", with("-s", sandbox+"/32", "!", "-o", link, "-j", "MASQUERADE")},
		{"filter", "FORWARD", with("-i", link, "-j", "ACCEPT")},
		{"filter", "FORWARD", with("-o", link, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")},
	}
}

// configureHost adds the host's rules in one iptables-restore (an exec
// costs milliseconds of the run's start).
func (p *Path) configureHost() error {
	// First in each chain, so that a host's DROP rules do not stop them.
	return netns.IPTablesRestore(iptables.ProtocolIPv4, p.hostRuleset("-I", " 1"), true)
}

// removeHostRules deletes exactly what configureHost added, in one exec.
func (p *Path) removeHostRules() error {
	return netns.IPTablesRestore(iptables.ProtocolIPv4, p.hostRuleset("-D", ""), true)
}

// hostRuleset is hostRules in iptables-save's format, each rule with op.
func (p *Path) hostRuleset(op, at string) string {
	var b strings.Builder
	table := ""
	for _, r := range hostRules(p.id, p.hostLink, p.sandboxAddr.Addr().String()) {
		if t := r[0].(string); t != table {
			if table != "" {
				b.WriteString("COMMIT\n")
			}
			table = t
			fmt.Fprintf(&b, "*%s\n", t)
		}
		fmt.Fprintf(&b, "%s %s%s %s\n", op, r[1].(string), at, strings.Join(r[2].([]string), " "))
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// RemoveLeftovers removes what a run with this id made on the host: its
// rules (whatever their addresses) and its link (whose other end goes
// with it). What is already gone is not an error.
func RemoveLeftovers(id string) error {
	return errors.Join(
		netns.RemoveTaggedRules(iptables.ProtocolIPv4, commentPrefix+id),
		deleteLink(HostLinkPrefix+id))
}

// deleteLink deletes the host's end of a kernel path's veth (the other end
// goes with it); one already gone, maybe by a concurrent remover, is fine.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		if _, ferr := netlink.LinkByName(name); ferr == nil {
			return fmt.Errorf("delete link %s: %w", name, err)
		}
	}
	return nil
}
