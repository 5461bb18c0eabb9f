package kernelpath_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// TestProtocolRulesAreWrittenAsTheKernelReadsThem: the rules that match a
// protocol and port hold what the policy says, and the kernel did not
// complain about how they were written (vishvananda/netlink's RuleAdd
// sends the protocol as four bytes, and the kernel logs "attribute type
// 22 has an invalid length" for each).
func TestProtocolRulesAreWrittenAsTheKernelReadsThem(t *testing.T) {
	w := newWorld(t, true)
	kmsg, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/kmsg (the kernel's log): %v", err)
	}
	defer unix.Close(kmsg)
	if _, err := unix.Seek(kmsg, 0, unix.SEEK_END); err != nil {
		t.Fatalf("seek /dev/kmsg to its end: %v", err)
	}

	w.setup(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true,
		Local: []string{fmt.Sprintf("tcp://%s:7001", w.srvIP), fmt.Sprintf("udp://%s/24:53", w.srvIP)}})

	out, err := exec.Command("ip", "-n", w.sandbox.Name(), "-4", "rule", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip rule show: %v: %s", err, out)
	}
	rules := string(out)
	for _, want := range []string{
		fmt.Sprintf("to %s ipproto tcp dport 7001 lookup", w.srvIP),
		fmt.Sprintf("to %s ipproto udp dport 53 lookup", netip.PrefixFrom(w.srvIP, 24).Masked()),
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("no rule %q in the sandbox:\n%s", want, rules)
		}
	}

	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(kmsg, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if errors.Is(err, unix.EPIPE) {
			continue // records were overwritten meanwhile: read on
		}
		if err != nil {
			t.Fatalf("read /dev/kmsg: %v", err)
		}
		if rec := buf[:n]; bytes.Contains(rec, []byte("attribute type 22 has an invalid length")) {
			t.Errorf("the kernel logged while the rules were added: %s", bytes.TrimSpace(rec))
		}
	}
}
