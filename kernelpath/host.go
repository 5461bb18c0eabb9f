package kernelpath

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
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
	return restore(p.hostRuleset("-I", " 1"))
}

// removeHostRules deletes exactly what configureHost added, in one exec.
func (p *Path) removeHostRules() error {
	return restore(p.hostRuleset("-D", ""))
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

// restore applies ruleset on top of the host's tables (--noflush), whole
// or not at all.
func restore(ruleset string) error {
	path, err := exec.LookPath("iptables-restore")
	if err != nil {
		return fmt.Errorf("find iptables-restore (install the iptables package): %w", err)
	}
	cmd := exec.Command(path, "--wait", "--noflush")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore --noflush of\n%s: %w: %s", ruleset, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// RemoveLeftovers removes what a run with this id made on the host: its
// rules (whatever their addresses) and its link (whose other end goes
// with it). What is already gone is not an error.
func RemoveLeftovers(id string) error {
	var errs []error
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	tag := commentPrefix + id
	for _, tc := range [][2]string{{"nat", "POSTROUTING"}, {"filter", "FORWARD"}} {
		rules, err := ipt.List(tc[0], tc[1])
		if err != nil {
			errs = append(errs, fmt.Errorf("iptables -t %s -S %s: %w", tc[0], tc[1], err))
			continue
		}
		for _, r := range rules {
			if !strings.Contains(r, `"`+tag+`"`) && !strings.Contains(r, " "+tag+" ") && !strings.HasSuffix(r, " "+tag) {
				continue
			}
			spec, err := splitRule(r, tc[1])
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := ipt.Delete(tc[0], tc[1], spec...); err != nil {
				// Another remover (the run's own teardown, a gc) may
				// have been first: gone is what was wanted.
				if ok, eerr := ipt.Exists(tc[0], tc[1], spec...); eerr != nil || ok {
					errs = append(errs, fmt.Errorf("iptables -t %s -D %s %s: %w", tc[0], tc[1], strings.Join(spec, " "), err))
				}
			}
		}
	}
	if err := deleteLink(HostLinkPrefix + id); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// splitRule turns a line of iptables -S ("-A CHAIN a b ...") back into the
// rule's arguments. The rules are ours: no argument has spaces, and the
// comment may be quoted.
func splitRule(line, chain string) ([]string, error) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "-A" || f[1] != chain {
		return nil, fmt.Errorf("unexpected iptables rule %q", line)
	}
	out := f[2:]
	for i, a := range out {
		out[i] = strings.Trim(a, `"`)
	}
	return out, nil
}

func (p *Path) deleteLink() error { return deleteLink(p.hostLink) }

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
