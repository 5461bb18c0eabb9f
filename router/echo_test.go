package router_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

// concurrentPings is how many pings the app has in flight at once.
const concurrentPings = 64

// envPingGroups carries net.ipv4.ping_group_range to the child process
// that runs the pings in a network namespace of its own.
const envPingGroups = "TRAFFICPOLICE_TEST_PING_GROUPS"

// The router pings from the host with ICMP datagram sockets where
// net.ipv4.ping_group_range lets it, else with one raw socket shared by
// all pings; each case runs in a fresh network namespace (the range is
// per namespace), so the host's setting decides nothing.
func TestConcurrentPingsShareTheHostsICMPSockets(t *testing.T) {
	netnstest.RequireRoot(t)
	if groups := os.Getenv(envPingGroups); groups != "" {
		pingConcurrently(t, groups)
		return
	}
	for _, c := range []struct{ name, groups string }{{"datagram", "0 2147483647"}, {"raw", "1 0"}} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()[:strings.Index(t.Name(), "/")]+"$", "-test.count=1", "-test.v", "-test.timeout=2m")
			cmd.Env = append(os.Environ(), envPingGroups+"="+c.groups)
			cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
			out, err := cmd.CombinedOutput()
			t.Logf("in a network namespace with ping_group_range %q:\n%s", c.groups, out)
			if err != nil || !strings.Contains(string(out), "--- PASS: ") {
				t.Errorf("the pings failed in their namespace: %v", err)
			}
		})
	}
}

// pingConcurrently runs in the child: its own network namespace, with
// loopback up and ping_group_range set to groups.
func pingConcurrently(t *testing.T, groups string) {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up: %v", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte(groups), 0); err != nil {
		t.Fatalf("set ping_group_range: %v", err)
	}
	opened := router.CountICMPSockets(t.Cleanup)
	app := start(t, policy.Rules{TCP: true, UDP: true, IgnoreLocalhost: true}, nil)
	dst := netip.MustParseAddr("127.0.0.1")

	var wg sync.WaitGroup
	errs := make(chan error, concurrentPings)
	for i := range concurrentPings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := []byte(fmt.Sprintf("ping %d of the app", i))
			reply, err := app.Ping(testContext(t), dst, uint16(1000+i), data)
			switch {
			case err != nil:
				errs <- err
			case reply.Type() != header.ICMPv4EchoReply || reply.Sequence() != uint16(1000+i) || !bytes.Equal(reply.Payload(), data):
				errs <- fmt.Errorf("ping %d: answered type %d seq %d %q, want its own echo reply", i, reply.Type(), reply.Sequence(), reply.Payload())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := opened()
	t.Logf("ICMP sockets opened for %d pings: %v", concurrentPings, got)
	if got["ip4:icmp"] > 1 {
		t.Errorf("%d raw ICMP sockets opened for %d pings, each seeing all of the host's ICMP: want at most one, shared", got["ip4:icmp"], concurrentPings)
	}
	if groups != "1 0" && got["ip4:icmp"] != 0 {
		t.Errorf("a raw ICMP socket opened although ping_group_range %q allows datagram ICMP", groups)
	}
}
