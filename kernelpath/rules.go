package kernelpath

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// neverKernel are destinations the kernel path never takes: loopback and
// the sandbox's own ranges (the router's DNS, the loopback alias), this
// network and multicast/broadcast.
var neverKernel = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/3"),
}

// installRules writes the sandbox's table:
//
//	chain out (route, output, mangle):
//	  ct mark Mark: meta mark set Mark, accept   (the connection's path)
//	  ct state != new, meta mark != 0: accept     (the router's own sockets)
//	  meta l4proto tcp|udp: goto decide
//	chain decide:
//	  daddr in neverKernel or @named4: accept     (the router decides)
//	  each step: [l4proto] [dport] [daddr/prefix]: (ct) mark set Mark | accept
//	chain post (nat, postrouting): oifname tpk0 masquerade
func (p *Path) installRules(steps []policy.Step) error {
	var fd int
	if err := p.ns.Do(func() error {
		var err error
		fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	}); err != nil {
		return fmt.Errorf("open the sandbox's namespace: %w", err)
	}
	defer unix.Close(fd)
	c, err := nftables.New(nftables.WithNetNSFd(fd), nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("nftables in the sandbox: %w", err)
	}
	p.nft = c
	t := c.AddTable(&nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv4})
	p.table = t
	set := &nftables.Set{Table: t, Name: namedSet, KeyType: nftables.TypeIPAddr}
	if err := c.AddSet(set, nil); err != nil {
		return fmt.Errorf("nftables set %s: %w", namedSet, err)
	}
	p.set = set

	out := c.AddChain(&nftables.Chain{Name: "out", Table: t, Type: nftables.ChainTypeRoute,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle})
	decide := c.AddChain(&nftables.Chain{Name: "decide", Table: t})
	post := c.AddChain(&nftables.Chain{Name: "post", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})

	rule := func(ch *nftables.Chain, e ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e}) }
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	mark := binaryutil.NativeEndian.PutUint32(Mark)

	rule(out, &expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark},
		&expr.Immediate{Register: 1, Data: mark},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		accept)
	rule(out, &expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		accept)
	rule(out, &expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		accept)
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		rule(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Verdict{Kind: expr.VerdictGoto, Chain: decide.Name})
	}

	for _, n := range neverKernel {
		rule(decide, append(daddrIn(n), accept)...)
	}
	rule(decide, daddr(),
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		accept)
	for _, s := range steps {
		if s.Prefix.IsValid() && !s.Prefix.Addr().Is4() {
			continue // an IPv6 range: no IPv4 flow matches it
		}
		var e []expr.Any
		switch s.Proto {
		case policy.TCP:
			e = append(e, l4proto(unix.IPPROTO_TCP)...)
		case policy.UDP:
			e = append(e, l4proto(unix.IPPROTO_UDP)...)
		}
		if s.Port != 0 {
			e = append(e,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(s.Port)})
		}
		if s.Prefix.IsValid() && s.Prefix.Bits() > 0 {
			e = append(e, daddrIn(s.Prefix)...)
		}
		if s.Local {
			e = append(e,
				&expr.Immediate{Register: 1, Data: mark},
				&expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: 1},
				&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
		}
		rule(decide, append(e, accept)...)
	}

	rule(post, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(SandboxLink)},
		&expr.Masq{})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s in the sandbox: %w", tableName, err)
	}
	return nil
}

func daddr() *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

func daddrIn(p netip.Prefix) []expr.Any {
	p = p.Masked()
	a := p.Addr().As4()
	mask := make([]byte, 4)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		daddr(),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
	}
}

func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// Named tells the kernel path that the sandbox's DNS has answered with a:
// from now on new flows to a go to the router, which knows a's names and
// so decides by rules that name hosts. It returns once the kernel knows,
// so call it before the answer reaches the app. IPv6 addresses never take
// the kernel path.
func (p *Path) Named(a netip.Addr) error {
	a = a.Unmap()
	if !a.Is4() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.named[a] || p.nft == nil {
		return nil
	}
	k := a.As4()
	if err := p.nft.SetAddElements(p.set, []nftables.SetElement{{Key: k[:]}}); err != nil {
		return fmt.Errorf("kernel path: add %s to %s: %w", a, namedSet, err)
	}
	if err := p.nft.Flush(); err != nil {
		return fmt.Errorf("kernel path: add %s to %s: %w", a, namedSet, err)
	}
	p.named[a] = true
	return nil
}
