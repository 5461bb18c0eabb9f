package launch

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moby/sys/capability"
	"golang.org/x/sys/unix"
)

// DefaultCapabilities is what an app that runs as root keeps, and the
// bounding set of every app: Docker's default set. It leaves out what
// would let the app change or leave the sandbox's network: CAP_NET_ADMIN
// (links, addresses, routes, nat rules, the namespace's sysctls),
// CAP_SYS_ADMIN (unshare, setns into another namespace, mounts),
// CAP_SYS_PTRACE and CAP_SYS_MODULE among others.
//
// CAP_NET_RAW stays, as in Docker: Debian and Ubuntu install ping with the
// file capability cap_net_raw+ep, and the kernel refuses to execute a file
// whose file capabilities the bounding set lacks (EPERM), for root too. A
// raw socket in the sandbox reaches no further than the sandbox's TUN,
// where the router polices every flow by its destination.
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// ParseCapabilities turns capability names as a user writes them
// ("net_admin", "NET_ADMIN", "CAP_NET_ADMIN", or "ALL" for every one) into
// the canonical CAP_ names, in the order given.
func ParseCapabilities(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		want := strings.ToUpper(strings.TrimSpace(n))
		if want == "ALL" {
			for _, c := range capability.ListKnown() {
				out = append(out, capName(c))
			}
			continue
		}
		if !strings.HasPrefix(want, "CAP_") {
			want = "CAP_" + want
		}
		if _, ok := capByName(want); !ok {
			return nil, fmt.Errorf("capability %q is unknown: want one of %s (with or without CAP_, any case), or ALL", n, knownNames())
		}
		out = append(out, want)
	}
	return out, nil
}

func capName(c capability.Cap) string { return "CAP_" + strings.ToUpper(c.String()) }

func capByName(name string) (capability.Cap, bool) {
	for _, c := range capability.ListKnown() {
		if capName(c) == name {
			return c, true
		}
	}
	return 0, false
}

func knownNames() string {
	var names []string
	for _, c := range capability.ListKnown() {
		names = append(names, strings.TrimPrefix(capName(c), "CAP_"))
	}
	return strings.Join(names, ", ")
}

// limitCapabilities leaves this thread (the one that execs the app) with
// keep, canonical names, in its bounding, permitted and effective sets, and
// nothing inheritable or ambient. A capability this process does not hold
// itself stays out (capset could not grant it). It must run while the
// thread is still root: dropping from the bounding set needs CAP_SETPCAP.
// The result is read back, so the app never starts with more than keep.
func limitCapabilities(keep []string) *StartError {
	caps, err := capability.NewPid2(0)
	if err == nil {
		err = caps.Load()
	}
	if err != nil {
		return fail("capabilities", err, "read this thread's capabilities")
	}
	var set []capability.Cap
	for _, name := range keep {
		if c, ok := capByName(name); ok && caps.Get(capability.PERMITTED, c) {
			set = append(set, c)
		}
	}
	caps.Clear(capability.CAPS | capability.BOUNDS | capability.AMBS)
	caps.Set(capability.BOUNDING|capability.PERMITTED|capability.EFFECTIVE, set...)
	if err := caps.Apply(capability.CAPS | capability.BOUNDS | capability.AMBS); err != nil {
		return fail("capabilities", err, "limit the app's capabilities to %v", keep)
	}
	// Read back by thread id, not 0: for 0 the library reads the bounding
	// set from /proc/self/status, which is the main thread's, and the
	// locked init thread need not be the main one (capabilities are per
	// thread; exec takes this thread's).
	after, err := capability.NewPid2(unix.Gettid())
	if err == nil {
		err = after.Load()
	}
	if err != nil {
		return fail("capabilities", err, "read back the app's capabilities")
	}
	supported, err := capability.ListSupported()
	if err != nil {
		return fail("capabilities", err, "list the kernel's capabilities")
	}
	for _, c := range supported {
		for _, which := range []capability.CapType{capability.BOUNDING, capability.PERMITTED, capability.EFFECTIVE, capability.INHERITABLE, capability.AMBIENT} {
			if after.Get(which, c) && (which == capability.INHERITABLE || which == capability.AMBIENT || !slices.Contains(set, c)) {
				return fail("capabilities", nil, "%s is still in the %s set after limiting it to %v", capName(c), which, keep)
			}
		}
	}
	return nil
}
