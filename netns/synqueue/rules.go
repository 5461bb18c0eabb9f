package synqueue

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"

	"github.com/trafficpolice/trafficpolice/netns"
)

// TagPrefix starts the comment of every rule Rules installs: TagPrefix +
// RunID, so that a killed run's rules are found (RemoveLeftovers).
const TagPrefix = "trafficpolice-synq-"

// Marks are the verdict marks the rules act on: bits of a packet's mark,
// compared under Mask. The mangle rule clears Mask's bits of every SYN it
// queues, so only a verdict sets them: an app's own SO_MARK cannot reach
// the router's listener or make a SYN refused.
type Marks struct {
	// Take sends the connection to the router's listener (nat REDIRECT).
	Take uint32
	// Refuse answers the SYN with a RST (filter REJECT tcp-reset).
	Refuse uint32
	Mask   uint32
}

// DefaultMarks lie above netns.RouterMark's bits.
var DefaultMarks = Marks{Take: 0x10000, Refuse: 0x20000, Mask: 0x30000}

// With returns mark with the Mask bits replaced by bits (Take or Refuse):
// Verdict's mark for a SYN whose mark was mark.
func (m Marks) With(mark, bits uint32) uint32 { return mark&^m.Mask | bits }

func (m Marks) validate() error {
	switch {
	case m.Mask&netns.RouterMark != 0:
		return fmt.Errorf("marks: Mask %#x is invalid: it must not share bits with the router's mark %#x", m.Mask, netns.RouterMark)
	case m.Take == 0 || m.Take&^m.Mask != 0:
		return fmt.Errorf("marks: Take %#x is invalid: want non-zero bits within Mask %#x", m.Take, m.Mask)
	case m.Refuse == 0 || m.Refuse&^m.Mask != 0:
		return fmt.Errorf("marks: Refuse %#x is invalid: want non-zero bits within Mask %#x", m.Refuse, m.Mask)
	case m.Take == m.Refuse:
		return fmt.Errorf("marks: Refuse %#x is invalid: want a value other than Take's", m.Refuse)
	}
	return nil
}

// Rules are the iptables rules of one run, inside the sandbox's namespace,
// for IPv4 and (unless NoIPv6) IPv6:
//
//	mangle OUTPUT: SYNs of new connections leaving by Link lose the Mask
//	               bits, then go to queue Queue (bypassed when no socket is
//	               bound to it)
//	nat OUTPUT:    SYNs leaving by Link marked Take are redirected to
//	               TakePort on loopback (127.0.0.1, ::1)
//	filter OUTPUT: SYNs leaving by Link marked Refuse get a RST
//	raw OUTPUT:    RSTs without ACK from TakePort on loopback are dropped
//	               (the listener's "no such connection", see below)
//
// The raw rule works around a kernel race the verdict opens. The verdict
// reinjects the app's SYN on the router's CPU, so the handshake's last ACK
// is made and delivered there while the app's first data, sent as its
// connect returns, is delivered on the app's CPU. When the data's socket
// lookup falls between the request socket's removal and the child's
// insertion, the listener answers it with a RST and the app's connection
// is reset (about 1 in 300 000 connections on a 2-CPU machine, seen in a
// packet capture as SYN, SYN-ACK, ACK, data, RST within 30 µs). Dropped,
// the data is retransmitted to the child. It is dropped before conntrack
// sees it (raw), which would otherwise close the connection's NAT entry.
// What the router means to reset it resets from the socket (SO_LINGER 0:
// RST+ACK); a bare RST from TakePort answers a segment no socket takes.
//
// Each rule is first in its chain and carries the comment TagPrefix+RunID.
type Rules struct {
	RunID    string
	Link     string // the interface whose SYNs are queued: the sandbox's TUN
	Queue    uint16
	TakePort uint16
	Marks    Marks // DefaultMarks unless the router's marks collide with them
	NoIPv6   bool  // the namespace has no IPv6: IPv4 rules only
}

// rule is one iptables rule and the kernel pieces it needs, for the error
// when the kernel refuses it.
type rule struct {
	table, chain string
	spec         []string
	needs        string
}

var (
	validRunID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	validLink  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,15}$`)
)

// validate checks r, naming the field, the value and what is valid.
func (r Rules) validate() error {
	switch {
	case !validRunID.MatchString(r.RunID):
		return fmt.Errorf("synqueue rules: RunID %q is invalid: want 1-64 letters, digits, '.', '_' or '-'", r.RunID)
	case !validLink.MatchString(r.Link):
		return fmt.Errorf("synqueue rules: Link %q is invalid: want an interface name of 1-15 letters, digits, '.', '_' or '-'", r.Link)
	case r.TakePort == 0:
		return fmt.Errorf("synqueue rules: TakePort 0 is invalid: want 1-65535")
	}
	if err := r.Marks.validate(); err != nil {
		return fmt.Errorf("synqueue rules: %w", err)
	}
	return nil
}

func (r Rules) families() []iptables.Protocol {
	if r.NoIPv6 {
		return []iptables.Protocol{iptables.ProtocolIPv4}
	}
	return []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6}
}

// rules are r's rules for one family, in the order they are installed.
func (r Rules) rules(proto iptables.Protocol) []rule {
	v4 := proto == iptables.ProtocolIPv4
	pick := func(a, b string) string {
		if v4 {
			return a
		}
		return b
	}
	m := r.Marks
	syn := []string{"-o", r.Link, "-p", "tcp", "-m", "tcp", "--syn"}
	tag := []string{"-m", "comment", "--comment", TagPrefix + r.RunID}
	newConn := []string{"-m", "conntrack", "!", "--ctstatus", "CONFIRMED"}
	spec := func(parts ...[]string) []string {
		var s []string
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	const compat = "; with iptables-nft also CONFIG_NFT_COMPAT"
	listenerRST := []string{"-o", "lo", "-p", "tcp", "-m", "tcp", "-s", pick("127.0.0.1", "::1"),
		"--sport", strconv.Itoa(int(r.TakePort)), "--tcp-flags", "RST,ACK", "RST"}
	return []rule{
		{"raw", "OUTPUT", spec(listenerRST, tag, []string{"-j", "DROP"}),
			pick("the IPv4 raw table (CONFIG_IP_NF_RAW", "the IPv6 raw table (CONFIG_IP6_NF_RAW") + ", CONFIG_NETFILTER_XT_MATCH_COMMENT" + compat + ")"},
		{"mangle", "OUTPUT", spec(syn, newConn, tag, []string{"-j", "MARK", "--set-xmark", fmt.Sprintf("0x0/%#x", m.Mask)}),
			"the tcp, conntrack and comment matches and the MARK target (CONFIG_NF_CONNTRACK, CONFIG_NETFILTER_XT_MATCH_CONNTRACK, CONFIG_NETFILTER_XT_MATCH_COMMENT, CONFIG_NETFILTER_XT_TARGET_MARK" + compat + ")"},
		{"mangle", "OUTPUT", spec(syn, newConn, tag, []string{"-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(r.Queue)), "--queue-bypass"}),
			"the NFQUEUE target (CONFIG_NETFILTER_XT_TARGET_NFQUEUE" + compat + ")"},
		{"nat", "OUTPUT", spec(syn, []string{"-m", "mark", "--mark", fmt.Sprintf("%#x/%#x", m.Take, m.Mask)}, tag, []string{"-j", "REDIRECT", "--to-ports", strconv.Itoa(int(r.TakePort))}),
			pick("IPv4 NAT and the REDIRECT target (CONFIG_IP_NF_NAT", "IPv6 NAT and the REDIRECT target (CONFIG_IP6_NF_NAT") + ", CONFIG_NETFILTER_XT_TARGET_REDIRECT, CONFIG_NETFILTER_XT_MATCH_MARK" + compat + ")"},
		{"filter", "OUTPUT", spec(syn, []string{"-m", "mark", "--mark", fmt.Sprintf("%#x/%#x", m.Refuse, m.Mask)}, tag, []string{"-j", "REJECT", "--reject-with", "tcp-reset"}),
			pick("the IPv4 REJECT target (CONFIG_IP_NF_TARGET_REJECT", "the IPv6 REJECT target (CONFIG_IP6_NF_TARGET_REJECT") + ", CONFIG_NETFILTER_XT_MATCH_MARK" + compat + ")"},
	}
}

// ruleset is rules in iptables-save's format, each inserted at the top of
// its chain in the order given (so the mangle rules keep theirs).
func ruleset(rules []rule) string {
	var b strings.Builder
	pos := map[[2]string]int{}
	table := ""
	for _, r := range rules {
		if r.table != table {
			if table != "" {
				b.WriteString("COMMIT\n")
			}
			table = r.table
			fmt.Fprintf(&b, "*%s\n", table)
		}
		k := [2]string{r.table, r.chain}
		pos[k]++
		fmt.Fprintf(&b, "-I %s %d %s\n", r.chain, pos[k], strings.Join(r.spec, " "))
	}
	if table != "" {
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// Install adds r's rules inside n, once per RunID (a second Install adds
// them again). Install them after the queue is bound and the listener
// listens; until then the bypass lets SYNs through anyway. On failure
// nothing of r's is left, and the error names the rule the kernel refused
// and what it needs.
func (r Rules) Install(n *netns.Namespace) error {
	return n.Do(r.InstallHere)
}

// InstallHere is Install for the calling thread's namespace.
func (r Rules) InstallHere() error {
	if err := r.validate(); err != nil {
		return err
	}
	for _, proto := range r.families() {
		if err := installRules(proto, r.rules(proto)); err != nil {
			if rerr := RemoveLeftoversHere(r.RunID); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return fmt.Errorf("synqueue rules for run %s: %w", r.RunID, err)
		}
	}
	return nil
}

// installRules adds rules of one family in one iptables-restore. When the
// kernel refuses them, it tries each alone to name the one refused and
// what it needs; the caller removes what was added.
func installRules(proto iptables.Protocol, rules []rule) error {
	err := netns.IPTablesRestore(proto, ruleset(rules), true)
	if err == nil {
		return nil
	}
	for _, one := range rules {
		if err := netns.IPTablesRestore(proto, ruleset([]rule{one}), true); err != nil {
			return fmt.Errorf("the %s rule `-A %s %s` was refused: the kernel may lack %s: %w",
				one.table, one.chain, strings.Join(one.spec, " "), one.needs, err)
		}
	}
	return err
}

// Remove deletes r's rules from n (RemoveLeftovers for r.RunID).
func (r Rules) Remove(n *netns.Namespace) error {
	return RemoveLeftovers(n, r.RunID)
}

// RemoveLeftovers deletes, inside n, every rule tagged with runID, IPv4
// and IPv6, however it reads. Rules already gone are not an error.
func RemoveLeftovers(n *netns.Namespace, runID string) error {
	return n.Do(func() error { return RemoveLeftoversHere(runID) })
}

// RemoveLeftoversHere is RemoveLeftovers for the calling thread's namespace.
func RemoveLeftoversHere(runID string) error {
	if !validRunID.MatchString(runID) {
		return fmt.Errorf("synqueue rules: RunID %q is invalid: want 1-64 letters, digits, '.', '_' or '-'", runID)
	}
	var errs []error
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		if err := netns.RemoveTaggedRules(proto, TagPrefix+runID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove synqueue rules of run %s: %w", runID, err)
	}
	return nil
}
