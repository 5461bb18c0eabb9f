package launch

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// dockerDefault is Docker's default capability set as /proc shows it:
// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
const dockerDefault = 0xa80425fb

// capSets reads the Cap* lines of a /proc/PID/status text.
func capSets(t *testing.T, status string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, l := range strings.Split(status, "\n") {
		name, v, ok := strings.Cut(l, ":\t")
		if !ok || !strings.HasPrefix(name, "Cap") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		out[name] = n
	}
	if len(out) != 5 {
		t.Fatalf("want CapInh, CapPrm, CapEff, CapBnd and CapAmb in:\n%s", status)
	}
	return out
}

// ourBounding is what this process may hand on at most (a CI runner in a
// container may have less than the full set).
func ourBounding(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	return capSets(t, string(b))["CapBnd"]
}

// Run as root without sudo (CI), the app keeps Docker's default set and
// nothing that changes or leaves the sandbox's network.
func TestRootAppKeepsOnlyDockersDefaultCapabilities(t *testing.T) {
	s := newSandbox(t)
	want := uint64(dockerDefault) & ourBounding(t)
	out, err := run(t, s.spec("grep", "^Cap", "/proc/self/status"))
	if err != nil {
		t.Fatal(err)
	}
	got := capSets(t, out)
	for set, w := range map[string]uint64{"CapPrm": want, "CapEff": want, "CapBnd": want, "CapInh": 0, "CapAmb": 0} {
		if got[set] != w {
			t.Errorf("%s = %016x, want %016x", set, got[set], w)
		}
	}
	link := "tpcap" + s.ns.Name()[len(s.ns.Name())-6:]
	for _, argv := range [][]string{
		{"ip", "link", "add", link, "type", "veth", "peer", "name", link + "p"}, // CAP_NET_ADMIN
		{"ip", "addr", "add", "10.255.0.1/32", "dev", "lo"},                     // CAP_NET_ADMIN
		{"unshare", "--net", "true"},                                            // CAP_SYS_ADMIN
		{"nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", os.Getpid()), "true"},  // CAP_SYS_ADMIN (setns to the host's)
		{"sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/forwarding"},         // CAP_NET_ADMIN (netns sysctls)
	} {
		if out, err := run(t, s.spec(argv...)); err == nil {
			t.Errorf("%q succeeded in the sandbox (%q): the app can change or leave its network", argv, out)
		}
	}
}

func TestCapAddGivesTheAppMore(t *testing.T) {
	s := newSandbox(t)
	link := "tpcap" + s.ns.Name()[len(s.ns.Name())-6:]
	spec := s.spec("ip", "link", "add", link, "type", "veth", "peer", "name", link+"p")
	spec.CapAdd = []string{"net_admin"}
	if _, err := run(t, spec); err != nil {
		t.Fatalf("ip link add with --cap-add NET_ADMIN: %v", err)
	}
	spec.Argv = []string{"grep", "^Cap", "/proc/self/status"}
	spec.CapAdd = []string{"CAP_NET_ADMIN", "SYS_ADMIN"}
	out, err := run(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	want := (uint64(dockerDefault) | 1<<12 | 1<<21) & ourBounding(t)
	if got := capSets(t, out); got["CapEff"] != want || got["CapBnd"] != want {
		t.Errorf("with NET_ADMIN and SYS_ADMIN added: %v, want %016x", got, want)
	}
}

// Under sudo the app runs as the user with no capability; what a setuid
// program may gain back is bounded by the same set.
func TestGivenUserHasNoCapabilitiesAndTheSameBound(t *testing.T) {
	s := newSandbox(t)
	uid, gid := uint32(65534), uint32(65534)
	spec := s.spec("grep", "^Cap", "/proc/self/status")
	spec.UID, spec.GID = &uid, &gid
	out, err := run(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	got := capSets(t, out)
	if got["CapEff"] != 0 || got["CapPrm"] != 0 || got["CapInh"] != 0 || got["CapAmb"] != 0 {
		t.Errorf("the user keeps capabilities: %v", got)
	}
	if want := uint64(dockerDefault) & ourBounding(t); got["CapBnd"] != want {
		t.Errorf("CapBnd = %016x, want %016x", got["CapBnd"], want)
	}
}

func TestParseCapabilities(t *testing.T) {
	got, err := ParseCapabilities([]string{"net_admin", "CAP_SYS_PTRACE", "Net_Raw"})
	if err != nil || fmt.Sprint(got) != "[CAP_NET_ADMIN CAP_SYS_PTRACE CAP_NET_RAW]" {
		t.Errorf("ParseCapabilities = %v, %v", got, err)
	}
	for _, bad := range []string{"", "NET_ADMINS", "CAP_", "cap net_admin"} {
		_, err := ParseCapabilities([]string{bad})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) || !strings.Contains(err.Error(), "NET_ADMIN") {
			t.Errorf("ParseCapabilities(%q) = %v, want an error naming it and the valid names", bad, err)
		}
	}
}
