package kernelpath

import (
	"strings"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// The firewall is read in a namespace of the test's: a drop policy on the
// host's forward hook would stop other tests' traffic.
func TestAForwardChainThatDropsKeepsTheKernelPathOff(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.Namespace(t, "tpt-kpf")
	var fd int
	if err := ns.Do(func() error {
		var err error
		fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	drop := nftables.ChainPolicyDrop
	addChain := func(fam nftables.TableFamily, table, chain string) {
		tb := c.AddTable(&nftables.Table{Name: table, Family: fam})
		c.AddChain(&nftables.Chain{Name: chain, Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// iptables' own FORWARD (Docker's DROP policy): the path's rules go first.
	addChain(nftables.TableFamilyIPv4, "filter", "FORWARD")
	if got, err := forwardDropper(c); err != nil || got != "" {
		t.Fatalf("iptables' FORWARD with policy drop: %q, %v; want none", got, err)
	}
	addChain(nftables.TableFamilyINet, "firewalld", "filter_FORWARD")
	got, err := forwardDropper(c)
	if err != nil || !strings.Contains(got, "inet firewalld") {
		t.Fatalf("firewalld's forward chain: %q, %v; want it named", got, err)
	}
}
