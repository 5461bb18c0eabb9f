package netns_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

func TestSetupSandboxLinkAddressesRoutes(t *testing.T) {
	n, _ := newSandbox(t, netns.SandboxLink{MTU: 9000})
	nsh, err := vns.GetFromPath(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	lo, err := h.LinkByName("lo")
	if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("lo: %v, up=%v", err, err == nil && lo.Attrs().Flags&net.FlagUp != 0)
	}
	link, err := h.LinkByName(netns.LinkName)
	if err != nil {
		t.Fatal(err)
	}
	if link.Type() != "tuntap" || link.Attrs().Flags&net.FlagUp == 0 || link.Attrs().MTU != 9000 {
		t.Errorf("link %s: type %s flags %v MTU %d", netns.LinkName, link.Type(), link.Attrs().Flags, link.Attrs().MTU)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{netns.SandboxAddr4.String(): false, netns.SandboxAddr6.String(): false}
	for _, a := range addrs {
		if _, ok := want[a.IPNet.String()]; ok {
			want[a.IPNet.String()] = true
			if a.IP.To4() == nil && a.Flags&0x40 != 0 { // IFA_F_TENTATIVE
				t.Errorf("%s is still tentative", a.IPNet)
			}
		}
	}
	for a, ok := range want {
		if !ok {
			t.Errorf("address %s missing on %s: %v", a, netns.LinkName, addrs)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{LinkIndex: link.Attrs().Index}, netlink.RT_FILTER_OIF)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw == nil && r.Src != nil {
				src, _ := netip.AddrFromSlice(r.Src)
				found = src.Unmap() == netns.SandboxAddr4.Addr() || src == netns.SandboxAddr6.Addr()
			}
		}
		if !found {
			t.Errorf("family %d: no default route dev %s with src: %v", fam, netns.LinkName, routes)
		}
	}
	if err := n.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + netns.LinkName + "/route_localnet")
		if err == nil && strings.TrimSpace(string(b)) != "1" {
			t.Errorf("route_localnet on %s = %q", netns.LinkName, b)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestSetupSandboxTUNGoesAwayOnClose(t *testing.T) {
	n, tun := newSandbox(t, netns.SandboxLink{})
	tun.Close()
	err := n.Do(func() error {
		_, err := net.InterfaceByName(netns.LinkName)
		return err
	})
	if err == nil {
		t.Errorf("%s still exists after the TUN file was closed", netns.LinkName)
	}
}

func TestSetupSandboxWithoutIPv6(t *testing.T) {
	n, _ := newSandbox(t, netns.SandboxLink{NoIPv6: true})
	if err := n.Do(func() error {
		out, err := exec.Command("ip6tables", "-t", "nat", "-S").CombinedOutput()
		if strings.Contains(string(out), netns.LoopbackChain) {
			t.Errorf("ip6tables has %s without IPv6:\n%s", netns.LoopbackChain, out)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := netns.AddListenerBypass(n, "tcp", 80); err != nil {
		t.Errorf("AddListenerBypass without IPv6: %v", err)
	}
}

// dialInBackground starts an unmarked dial from inside n, as the app would;
// the dial is abandoned when the test ends.
func dialInBackground(t *testing.T, n *netns.Namespace, network, addr string) <-chan error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() {
		done <- n.Do(func() error {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err == nil {
				c.Close()
			}
			return err
		})
	}()
	return done
}

// TestLoopbackRedirectTCP shows that the app's connect to its loopback
// leaves through the TUN towards the alias, from the sandbox's address, and
// that the router's answer completes the handshake.
func TestLoopbackRedirectTCP(t *testing.T) {
	for _, tc := range []struct{ dial, wantDst, wantSrc string }{
		{"127.0.0.1:4242", "198.19.0.1:4242", netns.SandboxAddr4.Addr().String()},
		{"127.0.3.7:4242", "198.19.3.7:4242", netns.SandboxAddr4.Addr().String()},
		{"[::1]:4242", "[fd74:7270:ffff::1]:4242", netns.SandboxAddr6.Addr().String()},
	} {
		t.Run(tc.dial, func(t *testing.T) {
			n, tun := newSandbox(t, netns.SandboxLink{})
			done := dialInBackground(t, n, "tcp", tc.dial)
			wantDst := netip.MustParseAddrPort(tc.wantDst)
			syn := readPacket(t, tun, func(p packet) bool { return p.proto == protoTCP && p.dst == wantDst })
			if syn.flags&tcpSYN == 0 {
				t.Fatalf("first packet to %s has flags %#x, want SYN", wantDst, syn.flags)
			}
			if syn.src.Addr().String() != tc.wantSrc {
				t.Errorf("SYN source %s, want %s (not loopback)", syn.src, tc.wantSrc)
			}
			if back, ok := netns.AliasToLoopback(syn.dst.Addr()); !ok || netip.AddrPortFrom(back, syn.dst.Port()).String() != tc.dial {
				t.Errorf("AliasToLoopback(%s) = %s, %v; want %s", syn.dst.Addr(), back, ok, tc.dial)
			}
			synack := packet{src: syn.dst, dst: syn.src, proto: protoTCP, seq: 1000, ack: syn.seq + 1, flags: tcpSYN | tcpACK}
			if _, err := tun.Write(synack.marshal()); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("the app's connect did not complete through the router: %v", err)
			}
		})
	}
}

func TestLoopbackRedirectUDP(t *testing.T) {
	for _, tc := range []struct{ dial, wantDst string }{
		{"127.0.0.1:5353", "198.19.0.1:5353"},
		{"[::1]:5353", "[fd74:7270:ffff::1]:5353"},
	} {
		t.Run(tc.dial, func(t *testing.T) {
			n, tun := newSandbox(t, netns.SandboxLink{})
			var conn net.Conn
			if err := n.Do(func() error {
				var err error
				conn, err = net.Dial("udp", tc.dial)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			wantDst := netip.MustParseAddrPort(tc.wantDst)
			p := readPacket(t, tun, func(p packet) bool { return p.proto == protoUDP && p.dst == wantDst })
			if string(p.payload) != "ping" || p.src.Addr().IsLoopback() {
				t.Errorf("datagram %s -> %s %q", p.src, p.dst, p.payload)
			}
			reply := packet{src: p.dst, dst: p.src, proto: protoUDP, payload: []byte("pong")}
			if _, err := tun.Write(reply.marshal()); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			k, err := conn.Read(buf)
			if err != nil || string(buf[:k]) != "pong" {
				t.Errorf("the app read %q, %v; want the router's pong", buf[:k], err)
			}
		})
	}
}

// listenInside opens a TCP listener inside n that echoes one line.
func listenInside(t *testing.T, n *netns.Namespace, addr string) net.Listener {
	t.Helper()
	ln := netnstest.Listen(t, n, "tcp", addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln
}

func echo(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Errorf("echo: %q, %v", buf, err)
	}
}

func TestDialInsideReachesLoopbackListener(t *testing.T) {
	n, _ := newSandbox(t, netns.SandboxLink{})
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln := listenInside(t, n, addr)
		c, err := netns.DialInside(context.Background(), n, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("DialInside %s: %v", ln.Addr(), err)
		}
		echo(t, c)
	}
	if _, err := netns.DialInside(context.Background(), n, "tcp", "localhost:80"); err == nil || !strings.Contains(err.Error(), "literal IP") {
		t.Errorf("DialInside with a name: %v", err)
	}
	if _, err := netns.DialInside(context.Background(), n, "sctp", "127.0.0.1:80"); err == nil || !strings.Contains(err.Error(), "network") {
		t.Errorf("DialInside sctp: %v", err)
	}
}

// TestListenerBypass shows the app reaching its own listener once the
// bypass is in, and the redirect taking over again once it is out.
func TestListenerBypass(t *testing.T) {
	n, tun := newSandbox(t, netns.SandboxLink{})
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln := listenInside(t, n, addr)
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		if err := netns.AddListenerBypass(n, "tcp", port); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddListenerBypass(n, "tcp", port); err != nil { // no-op
			t.Fatal(err)
		}
		if err := <-dialInBackground(t, n, "tcp", ln.Addr().String()); err != nil {
			t.Errorf("with the bypass, the app's connect to %s failed: %v", ln.Addr(), err)
		}
		if err := netns.RemoveListenerBypass(n, "tcp", port); err != nil {
			t.Fatal(err)
		}
		if err := netns.RemoveListenerBypass(n, "tcp", port); err != nil {
			t.Errorf("second remove: %v", err)
		}
		// Without it, the connect goes to the router again (which does not
		// answer here; the dial is abandoned at the end of the test).
		dialInBackground(t, n, "tcp", ln.Addr().String())
		readPacket(t, tun, func(p packet) bool {
			a, ok := netns.AliasToLoopback(p.dst.Addr())
			return p.proto == protoTCP && ok && a.Is4() == (addr[0] != '[') && p.dst.Port() == port
		})
	}
	if err := n.Do(func() error {
		out, err := exec.Command("iptables", "-t", "nat", "-S", netns.LoopbackChain).CombinedOutput()
		if strings.Contains(string(out), "--dport") {
			t.Errorf("bypass rule left:\n%s", out)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		proto string
		port  uint16
	}{{"icmp", 1}, {"tcp", 0}} {
		if err := netns.AddListenerBypass(n, bad.proto, bad.port); err == nil {
			t.Errorf("AddListenerBypass(%s, %d) accepted", bad.proto, bad.port)
		}
	}
}

func TestListeningPorts(t *testing.T) {
	n, _ := newSandbox(t, netns.SandboxLink{})
	tln := listenInside(t, n, "127.0.0.1:0")
	t6 := listenInside(t, n, "[::]:0")
	var pc, client net.PacketConn
	var connected net.Conn
	if err := n.Do(func() error {
		var err error
		if pc, err = net.ListenPacket("udp", "[::1]:0"); err != nil {
			return err
		}
		if client, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			return err
		}
		// A connected UDP socket is a client, not a listener.
		connected, err = net.Dial("udp", "198.18.0.53:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer client.Close()
	defer connected.Close()

	tcp, udp, err := netns.ListeningPorts(n)
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range []net.Listener{tln, t6} {
		if p := uint16(ln.Addr().(*net.TCPAddr).Port); !tcp[p] {
			t.Errorf("TCP listener %s missing from %v", ln.Addr(), tcp)
		}
	}
	for _, c := range []net.PacketConn{pc, client} {
		if p := uint16(c.LocalAddr().(*net.UDPAddr).Port); !udp[p] {
			t.Errorf("UDP socket %s missing from %v", c.LocalAddr(), udp)
		}
	}
	if p := uint16(connected.LocalAddr().(*net.UDPAddr).Port); udp[p] {
		t.Errorf("connected UDP socket %s listed as listening", connected.LocalAddr())
	}
	// sock_diag (what ListeningPorts asks) and the /proc tables agree.
	diag, proc, err := netns.ListeningPortsBothWays(n)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(diag, proc) {
		t.Errorf("sock_diag says TCP %v UDP %v, /proc/net says TCP %v UDP %v", diag[0], diag[1], proc[0], proc[1])
	}
	// The host's own listeners are not the sandbox's.
	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	tcp, _, _ = netns.ListeningPorts(n)
	if tcp[uint16(hostLn.Addr().(*net.TCPAddr).Port)] {
		t.Error("a host listener shows up in the sandbox")
	}
}

// TestLoopbackRulesAreTheNatTable checks the redirect's nat table as
// SetupSandbox leaves it, for both families, and that applying it again
// leaves the same table, not duplicates.
func TestLoopbackRulesAreTheNatTable(t *testing.T) {
	n, _ := newSandbox(t, netns.SandboxLink{})
	want := map[string][]string{
		"iptables": {
			"-N " + netns.LoopbackChain,
			"-A OUTPUT -j " + netns.LoopbackChain,
			"-A POSTROUTING -s 127.0.0.0/8 -o " + netns.LinkName + " -j MASQUERADE",
			"-A " + netns.LoopbackChain + " -m mark --mark 0x7470 -j RETURN",
			"-A " + netns.LoopbackChain + " -d " + netns.LoopbackNet4.String() + " -p tcp -j NETMAP --to " + netns.LoopbackAlias4.String(),
			"-A " + netns.LoopbackChain + " -d " + netns.LoopbackNet4.String() + " -p udp -j NETMAP --to " + netns.LoopbackAlias4.String(),
		},
		"ip6tables": {
			"-N " + netns.LoopbackChain,
			"-A OUTPUT -j " + netns.LoopbackChain,
			"-A POSTROUTING -s ::1/128 -o " + netns.LinkName + " -j MASQUERADE",
			"-A " + netns.LoopbackChain + " -m mark --mark 0x7470 -j RETURN",
			"-A " + netns.LoopbackChain + " -d ::1/128 -p tcp -j DNAT --to-destination " + netns.LoopbackAlias6.String(),
			"-A " + netns.LoopbackChain + " -d ::1/128 -p udp -j DNAT --to-destination " + netns.LoopbackAlias6.String(),
		},
	}
	check := func(when string) {
		t.Helper()
		for cmd, rules := range want {
			var out []byte
			if err := n.Do(func() error {
				var err error
				out, err = exec.Command(cmd, "-w", "-t", "nat", "-S").CombinedOutput()
				return err
			}); err != nil {
				t.Fatalf("%s -t nat -S: %v: %s", cmd, err, out)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if !strings.HasPrefix(l, "-P ") {
					got = append(got, l)
				}
			}
			if strings.Join(got, "\n") != strings.Join(rules, "\n") {
				t.Errorf("%s: %s nat table:\n%s\nwant:\n%s", when, cmd, strings.Join(got, "\n"), strings.Join(rules, "\n"))
			}
		}
	}
	check("after SetupSandbox")
	if err := n.Do(func() error {
		for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
			if err := netns.InstallLoopbackRules(proto, netns.LinkName); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("applied twice")
}
