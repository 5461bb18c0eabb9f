package netns

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func TestLoopbackAlias(t *testing.T) {
	for _, tc := range []struct {
		lo, alias string
		mapped    bool
	}{
		{"127.0.0.1", "198.19.0.1", true},
		{"127.0.255.254", "198.19.255.254", true},
		{"::1", "fd74:7270:ffff::1", true},
		{"127.1.0.1", "127.1.0.1", false},
		{"10.0.0.1", "10.0.0.1", false},
		{"::2", "::2", false},
	} {
		lo, alias := netip.MustParseAddr(tc.lo), netip.MustParseAddr(tc.alias)
		if got := LoopbackToAlias(lo); got != alias {
			t.Errorf("LoopbackToAlias(%s) = %s, want %s", lo, got, alias)
		}
		back, ok := AliasToLoopback(alias)
		if ok != tc.mapped || (ok && back != lo) {
			t.Errorf("AliasToLoopback(%s) = %s, %v", alias, back, ok)
		}
	}
	if got := LoopbackToAlias(netip.MustParseAddr("::ffff:127.0.0.1")); got.String() != "198.19.0.1" {
		t.Errorf("4-in-6 loopback: %s", got)
	}
	if !SandboxAddr4.Contains(DNSAddr4) || !SandboxAddr6.Contains(DNSAddr6) {
		t.Error("the DNS addresses must be on the TUN's subnets")
	}
}

func TestParseProcNet(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
`
	ports := map[uint16]bool{}
	if err := parseProcNet(strings.NewReader(tcp), false, ports); err != nil {
		t.Fatal(err)
	}
	if len(ports) != 1 || !ports[8080] {
		t.Errorf("tcp ports = %v, want {8080}", ports)
	}
	udp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  10: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0 0
  11: 00000000000000000000000001000000:D431 00000000000000000000000001000000:0035 01 00000000:00000000 00:00000000 00000000     0        0 4 2 0 0
`
	ports = map[uint16]bool{}
	if err := parseProcNet(strings.NewReader(udp6), true, ports); err != nil {
		t.Fatal(err)
	}
	if len(ports) != 1 || !ports[53] {
		t.Errorf("udp ports = %v, want {53}", ports)
	}
	if err := parseProcNet(strings.NewReader("h\n 0: 0100007F:ZZ 0:0 0A\n"), false, map[uint16]bool{}); err == nil {
		t.Error("bad port accepted")
	}
}

// FuzzParseProcNet: any /proc/net table (the app's sockets, as the kernel
// prints them) parses without panicking into ports that are not 0.
func FuzzParseProcNet(f *testing.F) {
	f.Add([]byte("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0\n"), false)
	f.Add([]byte("  sl  local_address rem_address   st\n   1: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 0\n"), true)
	f.Add([]byte("header\n0: :: 0A\n1: 0:FFFFF 0:0 07\n"), true)
	f.Fuzz(func(t *testing.T, b []byte, udp bool) {
		ports := map[uint16]bool{}
		_ = parseProcNet(bytes.NewReader(b), udp, ports)
		if ports[0] {
			t.Errorf("port 0 listed from %q", b)
		}
	})
}
