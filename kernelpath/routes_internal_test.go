package kernelpath

import (
	"net/netip"
	"testing"
)

// A DNS answer may name any address; the sandbox's own ranges, loopback
// and multicast never leave through the veth, even behind a default route
// that forwards.
func TestForwardsNeverTakesTheSandboxsOwnRanges(t *testing.T) {
	p := &Path{routes: []hostRoute{
		{prefix: netip.MustParsePrefix("0.0.0.0/0"), forward: true, dev: "eth0"},
		{prefix: netip.MustParsePrefix("10.9.0.0/16"), forward: false, dev: "wg0"},
	}}
	for a, want := range map[string]bool{
		"192.0.2.7": true, "10.9.1.1": false,
		"198.18.0.53": false, "198.19.0.1": false, "127.0.0.1": false, "224.0.0.251": false, "169.254.70.2": false,
	} {
		if got := p.Forwards(netip.MustParseAddr(a)); got != want {
			t.Errorf("Forwards(%s) = %v, want %v", a, got, want)
		}
	}
}
