package kernelpath

import (
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// untrack leaves the kernel path's packets out of the sandbox's conntrack
// (there for the loopback redirect), which has nothing to do for them: the
// host tracks and translates them. It saves a connection entry per flow.
// Written over netlink: no exec.
func (p *Path) untrack() error {
	f, err := os.Open(p.ns.Path())
	if err != nil {
		return fmt.Errorf("open %s: %w", p.ns, err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", p.ns, err)
	}
	t := c.AddTable(&nftables.Table{Name: "trafficpolice_kernel", Family: nftables.TableFamilyIPv4})
	src := p.sandboxAddr.Addr().As4()
	for _, ch := range []struct {
		name  string
		hook  *nftables.ChainHook
		match []expr.Any
	}{
		{"out", nftables.ChainHookOutput, []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src[:]},
		}},
		{"in", nftables.ChainHookPrerouting, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(SandboxLink)},
		}},
	} {
		chain := c.AddChain(&nftables.Chain{Name: ch.name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: ch.hook, Priority: nftables.ChainPriorityRaw})
		c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: append(ch.match, &expr.Notrack{})})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table trafficpolice_kernel in %s: %w", p.ns, err)
	}
	return nil
}

func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}
