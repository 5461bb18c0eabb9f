package synqueue

import (
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
)

func TestRulesRefuseBadInput(t *testing.T) {
	good := Rules{RunID: "r1", Link: "tp0", Queue: 7, TakePort: 15001, Marks: DefaultMarks}
	if err := good.validate(); err != nil {
		t.Fatalf("good rules: %v", err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(*Rules)
	}{
		{"empty RunID", "RunID", func(r *Rules) { r.RunID = "" }},
		{"RunID with a space", "RunID", func(r *Rules) { r.RunID = "a b" }},
		{"Link too long", "Link", func(r *Rules) { r.Link = "abcdefghijklmnop" }},
		{"Link with a quote", "Link", func(r *Rules) { r.Link = `tp"0` }},
		{"TakePort 0", "TakePort", func(r *Rules) { r.TakePort = 0 }},
		{"Take outside Mask", "Take", func(r *Rules) { r.Marks = Marks{Take: 0x40000, Refuse: 0x20000, Mask: 0x30000} }},
		{"no marks", "Take", func(r *Rules) { r.Marks = Marks{} }},
		{"Refuse zero", "Refuse", func(r *Rules) { r.Marks = Marks{Take: 0x10000, Mask: 0x30000} }},
		{"Take equals Refuse", "Refuse", func(r *Rules) { r.Marks = Marks{Take: 0x10000, Refuse: 0x10000, Mask: 0x30000} }},
		{"Mask over the router's mark", "Mask", func(r *Rules) { r.Marks = Marks{Take: 0x10, Refuse: 0x20, Mask: 0x30} }},
	} {
		r := good
		tc.edit(&r)
		if err := r.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error naming %s", tc.name, err, tc.want)
		}
	}
}

// TestRulesAreInstalledAndRemovedWhole installs a run's rules in a lab and
// reads them back, then removes them twice (the second time finds none).
func TestRulesAreInstalledAndRemovedWhole(t *testing.T) {
	l := newLab(t)
	r := Rules{RunID: l.runID, Link: l.link, Queue: 9, TakePort: 15001, Marks: DefaultMarks}
	if err := r.Install(l.ns); err != nil {
		t.Fatal(err)
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command("ip", "netns", "exec", l.ns.Name(), save).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", save, err, out)
		}
		var ours []string
		for _, line := range strings.Split(string(out), "\n") {
			if netns.RuleHasComment(line, TagPrefix+l.runID) {
				ours = append(ours, line)
			}
		}
		want := []string{"-j MARK --set-xmark 0x0/0x30000", "-j NFQUEUE --queue-num 9 --queue-bypass", "-j REDIRECT --to-ports 15001", "-j REJECT --reject-with tcp-reset"}
		if len(ours) != len(want)+1 {
			t.Fatalf("%s shows %d rules of the run; want %d:\n%s", save, len(ours), len(want)+1, strings.Join(ours, "\n"))
		}
		rst := 0
		for _, r := range ours {
			if strings.Contains(r, "-o lo ") && strings.Contains(r, "--sport 15001 --tcp-flags RST,ACK RST") && strings.HasSuffix(r, "-j DROP") {
				rst++
			}
		}
		if rst != 1 {
			t.Errorf("%s: %d rules dropping the listener port's bare RSTs; want 1:\n%s", save, rst, strings.Join(ours, "\n"))
		}
		// iptables-save orders the tables its own way.
		for _, w := range want {
			n := 0
			for _, r := range ours {
				if strings.HasSuffix(r, w) && strings.Contains(r, "-o "+l.link+" ") && strings.Contains(r, "--tcp-flags FIN,SYN,RST,ACK SYN") {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: %d SYN rules out of %s ending %q; want 1:\n%s", save, n, l.link, w, strings.Join(ours, "\n"))
			}
		}
	}
	for i := range 2 {
		if err := r.Remove(l.ns); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
		if n := l.tagged(t); n != 0 {
			t.Fatalf("after remove %d: %d rules of the run are left", i, n)
		}
	}
}

// TestRefusedRuleIsNamedAndNothingIsLeft feeds the installer a rule the
// kernel refuses after good ones: the error names it and what it needs,
// and the good ones are gone again.
func TestRefusedRuleIsNamedAndNothingIsLeft(t *testing.T) {
	l := newLab(t)
	r := Rules{RunID: l.runID, Link: l.link, Queue: 9, TakePort: 15001, Marks: DefaultMarks}
	rules := append(r.rules(iptables.ProtocolIPv4), rule{"filter", "OUTPUT",
		[]string{"-o", l.link, "-m", "comment", "--comment", TagPrefix + l.runID, "-j", "TPNOSUCH"}, "the TPNOSUCH target (a test's)"})
	err := l.ns.Do(func() error { return installRules(iptables.ProtocolIPv4, rules) })
	if err == nil || !strings.Contains(err.Error(), "TPNOSUCH target (a test's)") || !strings.Contains(err.Error(), "-j TPNOSUCH") {
		t.Fatalf("install with a bad rule: %v; want an error naming the rule and what it needs", err)
	}
	// installRules leaves the cleanup to its caller, InstallHere.
	if err := RemoveLeftovers(l.ns, l.runID); err != nil {
		t.Fatal(err)
	}
	if n := l.tagged(t); n != 0 {
		t.Errorf("%d rules of the run are left", n)
	}
}

// TestListenersBareRSTIsDropped: a segment for a connection the listener's
// port no longer has gets a bare RST; the rules drop it before conntrack
// (see Rules). Here the segment is data written after the listener's side
// closed (its orphan resets); in a run it is the app's first data in the
// kernel's race with the child socket's insertion.
func TestListenersBareRSTIsDropped(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "IPv4", true: "IPv6"}[v6]
		t.Run(name, func(t *testing.T) {
			l := newLab(t)
			ln4, ln6, port := l.listen(t)
			ln := ln4
			if v6 {
				ln = ln6
			}
			if !l.writeAfterClose(t, ln, waitLimit) {
				t.Fatal("without the rules, a write after the listener's side closed was not reset")
			}
			l.install(t, labQueue, port)
			if l.writeAfterClose(t, ln, time.Second) {
				t.Error("with the rules, a write after the listener's side closed was reset; want its RST dropped")
			}
			save := map[bool]string{false: "iptables-save", true: "ip6tables-save"}[v6]
			if n := l.rstDrops(t, save); n < 1 {
				t.Errorf("%s counts %d packets on the rule dropping the listener's bare RSTs; want at least 1", save, n)
			}
		})
	}
}

// writeAfterClose connects to ln inside the lab, closes the accepted side,
// writes once its FIN arrived, and says whether the orphan's RST reset the
// connection within wait.
func (l *lab) writeAfterClose(t *testing.T, ln *net.TCPListener, wait time.Duration) bool {
	t.Helper()
	var c *net.TCPConn
	if err := l.ns.Do(func() error {
		nc, err := net.DialTimeout("tcp", ln.Addr().String(), waitLimit)
		if err == nil {
			c = nc.(*net.TCPConn)
		}
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", ln.Addr(), err)
	}
	defer c.Close()
	ln.SetDeadline(time.Now().Add(waitLimit))
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	s.Close()
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read the listener side's FIN: %v; want EOF", err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("write: %v", err)
	}
	// After the FIN a read says EOF either way: the socket's state tells.
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(wait); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		var info *unix.TCPInfo
		var ierr error
		if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || ierr != nil {
			t.Fatalf("TCP_INFO: %v", errors.Join(err, ierr))
		}
		if info.State == tcpClose {
			return true
		}
	}
	return false
}

// tcpClose is TCP_CLOSE, the state a reset leaves a socket in.
const tcpClose = 7

// rstDrops reads the packet counter of the lab's rule that drops the
// listener port's bare RSTs.
func (l *lab) rstDrops(t *testing.T, save string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", l.ns.Name(), save, "-c", "-t", "raw").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", save, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if !netns.RuleHasComment(line, TagPrefix+l.runID) || !strings.HasSuffix(line, "-j DROP") {
			continue
		}
		// [packets:bytes] -A OUTPUT ...
		pkts, _, _ := strings.Cut(strings.TrimPrefix(line, "["), ":")
		n, err := strconv.Atoi(pkts)
		if err != nil {
			t.Fatalf("%s: counters of %q: %v", save, line, err)
		}
		return n
	}
	t.Fatalf("%s shows no rule of the lab's dropping bare RSTs:\n%s", save, out)
	return 0
}
