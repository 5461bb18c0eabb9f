package nat

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The nftables backend, for pods without an iptables binary: it speaks
// nf_tables netlink itself (google/nftables). Per family (ip, ip6), a
// table TP-IN-<id> of the agent's own holds two base chains, as `nft list
// ruleset` prints them:
//
//	chain prerouting {
//		type nat hook prerouting priority dstnat; policy accept;
//		meta mark 0x00007471 return
//		tcp dport P tcp flags syn / syn,ack fib daddr type local redirect to :L   (per port)
//	}
//	chain output { type nat hook output priority -100; ...the same rules... }
//
// Every change rewrites the family's table in one netlink transaction
// (create it if missing, delete it, write it anew), so the kernel never
// shows a half-written table and no rule handles need keeping. A table
// with no port left is deleted.

type nftFamily struct {
	family nftables.TableFamily
	name   string // ip or ip6
	to     uint16 // the agent's redirect listener port for this family
}

// nftRules is one agent's tables.
type nftRules struct {
	table string
	fams  []nftFamily

	mu    sync.Mutex
	ports map[uint16]bool
}

// nftHooks are the base chains of a table: connections from other hosts
// (prerouting) and from the pod itself (output).
var nftHooks = []struct {
	name string
	hook *nftables.ChainHook
}{{"prerouting", nftables.ChainHookPrerouting}, {"output", nftables.ChainHookOutput}}

// newNFTRules checks that the agent can manage its tables (it writes and
// deletes one per family) and returns the rules, with no table in place:
// a table exists only while a port is redirected. IPv4 must work; IPv6 is
// skipped (with a log line) where the kernel has no ip6 nat. to4 and to6
// are the ports of the redirect listeners (to6 0: no IPv6).
func newNFTRules(id string, to4, to6 uint16, log *slog.Logger) (*nftRules, error) {
	r := &nftRules{table: ChainPrefix + id, ports: map[uint16]bool{}}
	for _, f := range []nftFamily{{nftables.TableFamilyIPv4, "ip", to4}, {nftables.TableFamilyIPv6, "ip6", to6}} {
		if f.to == 0 {
			continue
		}
		err := r.write(f, []uint16{})
		if err == nil {
			err = r.write(f, nil)
		}
		if err != nil {
			if f.family == nftables.TableFamilyIPv6 {
				log.Warn("no IPv6 steal or mirror: nftables ip6 nat is not usable in this pod", "err", err)
				continue
			}
			return nil, fmt.Errorf("nftables: %w", err)
		}
		r.fams = append(r.fams, f)
	}
	return r, nil
}

func (r *nftRules) Kind() Backend { return NFTables }

func (r *nftRules) Name() string { return r.table }

func (r *nftRules) Where() string {
	var names []string
	for _, f := range r.fams {
		names = append(names, f.name)
	}
	return fmt.Sprintf("nftables table %s (%s)", r.table, strings.Join(names, ", "))
}

// write makes the family's table hold exactly the redirects of ports, in
// one transaction; nil ports deletes the table (an empty, non-nil list
// keeps it with the mark rule alone).
func (r *nftRules) write(f nftFamily, ports []uint16) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("%s table %s: open nf_tables netlink: %w", f.name, r.table, err)
	}
	t := &nftables.Table{Name: r.table, Family: f.family}
	// Adding first makes the delete succeed whether or not it existed.
	c.AddTable(t)
	c.DelTable(t)
	if ports != nil {
		c.AddTable(t)
		for _, h := range nftHooks {
			ch := c.AddChain(&nftables.Chain{Name: h.name, Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: h.hook, Priority: nftables.ChainPriorityNATDest})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: nftMarkReturn(),
				UserData: userdata.AppendString(nil, userdata.TypeComment, "the agent's own sockets")})
			for _, p := range ports {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: nftRedirect(p, f.to),
					UserData: userdata.AppendString(nil, userdata.TypeComment, fmt.Sprintf("trafficpolice: pod port %d", p))})
			}
		}
	}
	if err := c.Flush(); err != nil {
		if ports == nil {
			return fmt.Errorf("delete %s table %s: %w", f.name, r.table, err)
		}
		return fmt.Errorf("write %s table %s: %w", f.name, r.table, err)
	}
	return nil
}

// nftMarkReturn is `meta mark Mark return`: the agent's own sockets
// go on untouched.
func nftMarkReturn() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(Mark)},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}
}

// nftRedirect is `tcp dport port tcp flags & (syn|ack) == syn fib daddr
// type local redirect to :to`. SYNs only, as with iptables: where the
// namespace had no conntrack before, connections already open look new
// from their next packet, and must not be redirected mid-stream.
func nftRedirect(port, to uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(to)},
		&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

// sortedPorts lists ports in order, never nil (an empty list keeps a
// table, nil deletes it).
func sortedPorts(ports map[uint16]bool) []uint16 {
	out := make([]uint16, 0, len(ports))
	for p := range ports {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// apply writes every family's table for ports; the last port gone
// deletes the tables.
func (r *nftRules) apply(ports map[uint16]bool) error {
	var errs []error
	for _, f := range r.fams {
		want := sortedPorts(ports)
		if len(want) == 0 {
			want = nil
		}
		if err := r.write(f, want); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *nftRules) Add(port uint16) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ports[port] {
		return nil
	}
	next := map[uint16]bool{port: true}
	for p := range r.ports {
		next[p] = true
	}
	if err := r.apply(next); err != nil {
		// Put back what was there, as far as it goes.
		_ = r.apply(r.ports)
		return fmt.Errorf("redirect port %d: %w", port, err)
	}
	r.ports = next
	return nil
}

func (r *nftRules) Remove(port uint16) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.ports, port)
	if err := r.apply(r.ports); err != nil {
		return fmt.Errorf("remove the redirect of port %d: %w", port, err)
	}
	return nil
}

// close deletes the tables.
func (r *nftRules) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ports = map[uint16]bool{}
	err := r.apply(nil)
	r.fams = nil
	return err
}

// sweepStaleTables deletes the tables of agents that died without
// deleting them, and returns their names ("ip TP-IN-…"). A live agent's
// tables are left alone. A kernel without nf_tables has none to sweep.
func sweepStaleTables(self string, log *slog.Logger) ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("open nf_tables netlink: %w", err)
	}
	var removed []string
	var errs []error
	for _, fam := range []struct {
		family nftables.TableFamily
		name   string
	}{{nftables.TableFamilyIPv4, "ip"}, {nftables.TableFamilyIPv6, "ip6"}} {
		tables, err := c.ListTablesOfFamily(fam.family)
		if err != nil {
			if !errors.Is(err, unix.EPROTONOSUPPORT) && !errors.Is(err, unix.EAFNOSUPPORT) {
				errs = append(errs, fmt.Errorf("list nftables %s tables: %w", fam.name, err))
			}
			continue
		}
		for _, t := range tables {
			id, ok := strings.CutPrefix(t.Name, ChainPrefix)
			if !ok || id == self || agentAlive(id) {
				continue
			}
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				errs = append(errs, fmt.Errorf("delete nftables %s table %s: %w", fam.name, t.Name, err))
				continue
			}
			name := fam.name + " " + t.Name
			log.Info("removed the nftables table of an agent that is gone", "table", name)
			removed = append(removed, name)
		}
	}
	return removed, errors.Join(errs...)
}

// ListNFTables describes the nftables tables of trafficpolice agents (any
// agent's, alive or not) in the network namespace held by the file
// descriptor netnsFd (0: the caller's own), one line per rule:
//
//	ip TP-IN-1a2b3c4d prerouting (nat hook prerouting priority -100): tcp dport 9999 syn fib daddr type local redirect to :41234
//
// None is an empty list. It is for diagnostics and tests; it changes
// nothing.
func ListNFTables(netnsFd int) ([]string, error) {
	c, err := nftables.New(nftables.WithNetNSFd(netnsFd))
	if err != nil {
		return nil, fmt.Errorf("open nf_tables netlink: %w", err)
	}
	var out []string
	for _, fam := range []struct {
		family nftables.TableFamily
		name   string
	}{{nftables.TableFamilyIPv4, "ip"}, {nftables.TableFamilyIPv6, "ip6"}} {
		chains, err := c.ListChainsOfTableFamily(fam.family)
		if err != nil {
			return nil, fmt.Errorf("list nftables %s chains: %w", fam.name, err)
		}
		for _, ch := range chains {
			if !strings.HasPrefix(ch.Table.Name, ChainPrefix) {
				continue
			}
			head := fmt.Sprintf("%s %s %s", fam.name, ch.Table.Name, ch.Name)
			if ch.Hooknum != nil && ch.Priority != nil {
				hook := map[nftables.ChainHook]string{unix.NF_INET_PRE_ROUTING: "prerouting", unix.NF_INET_LOCAL_OUT: "output"}[*ch.Hooknum]
				if hook == "" {
					hook = fmt.Sprint(*ch.Hooknum)
				}
				head += fmt.Sprintf(" (%s hook %s priority %d)", ch.Type, hook, *ch.Priority)
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return nil, fmt.Errorf("list the rules of nftables %s: %w", head, err)
			}
			if len(rules) == 0 {
				out = append(out, head+": (no rule)")
			}
			for _, r := range rules {
				out = append(out, head+": "+describeExprs(r.Exprs))
			}
		}
	}
	return out, nil
}

// describeExprs renders the expressions this file writes much as nft
// prints them; anything else by its type.
func describeExprs(exprs []expr.Any) string {
	var words []string
	var loaded string // what the last load put in the register
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			loaded = map[expr.MetaKey]string{expr.MetaKeyMARK: "meta mark", expr.MetaKeyL4PROTO: "meta l4proto"}[e.Key]
		case *expr.Payload:
			switch {
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
				loaded = "dport"
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 13 && e.Len == 1:
				loaded = "flags"
			default:
				loaded = fmt.Sprintf("payload %d@%d", e.Len, e.Offset)
			}
		case *expr.Bitwise:
			loaded += fmt.Sprintf(" & %#x", e.Mask)
		case *expr.Fib:
			loaded = "fib daddr type"
		case *expr.Cmp:
			words = append(words, describeCmp(loaded, e))
		case *expr.Immediate:
			loaded = fmt.Sprintf(":%d", binaryutil.BigEndian.Uint16(append(make([]byte, max(0, 2-len(e.Data))), e.Data...)))
		case *expr.Redir:
			words = append(words, "redirect to "+loaded)
		case *expr.Verdict:
			words = append(words, map[expr.VerdictKind]string{expr.VerdictReturn: "return", expr.VerdictAccept: "accept", expr.VerdictDrop: "drop"}[e.Kind])
		default:
			words = append(words, fmt.Sprintf("%T", e))
		}
	}
	return strings.Join(words, " ")
}

func describeCmp(loaded string, c *expr.Cmp) string {
	op := ""
	if c.Op != expr.CmpOpEq {
		op = fmt.Sprintf(" (op %d)", c.Op)
	}
	switch {
	case loaded == "meta mark" && len(c.Data) == 4:
		return fmt.Sprintf("meta mark %#x%s", binaryutil.NativeEndian.Uint32(c.Data), op)
	case loaded == "meta l4proto" && len(c.Data) == 1 && c.Data[0] == unix.IPPROTO_TCP:
		return "tcp" + op
	case loaded == "dport" && len(c.Data) == 2:
		return fmt.Sprintf("dport %d%s", binaryutil.BigEndian.Uint16(c.Data), op)
	case loaded == "flags & 0x12" && len(c.Data) == 1 && c.Data[0] == 0x02:
		return "syn" + op
	case loaded == "fib daddr type" && len(c.Data) == 4 && binaryutil.NativeEndian.Uint32(c.Data) == unix.RTN_LOCAL:
		return "fib daddr type local" + op
	}
	return fmt.Sprintf("%s == %#x%s", loaded, c.Data, op)
}
