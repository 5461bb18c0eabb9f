package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"

	"github.com/trafficpolice/trafficpolice/netns"
)

// The bench's network, all of it created by the bench and named after its
// run id:
//
//	pod netns "tpb-<id>-pod"  eth0 = podIP ──veth── host "tpb<id>p" = podGW
//	srv netns "tpb-<id>-srv"  eth0 = srvIP ──veth── host "tpb<id>s" = srvGW, natIP
//
// The host forwards between the two veths (forwarding is switched on for
// those two links only) and source-NATs the pod's traffic to the server,
// so the server sees a host address whichever path a flow took: the
// kernel path (a client in the pod netns) crosses the same link and pays
// for a NAT as the router's local path (the router dials from the host).
// The NAT uses an address of its own, natIP: the server's TIME_WAIT
// sockets from one path must not collide with the other path's ports. The
// agent for the remote path runs in the pod netns.
const (
	namePrefix = "tpb-"
	stateDir   = "/run/trafficpolice-bench"
)

type topology struct {
	id             string
	pod, srv       *netns.Namespace
	podLink        string // host side of the pod's veth
	srvLink        string // host side of the server's veth
	podIP, podGW   netip.Addr
	srvIP, srvGW   netip.Addr
	natIP          netip.Addr
	podNet, srvNet netip.Prefix
	undo           []func() error
}

// state is what a run records so that a later run can remove what a killed
// one left behind.
type state struct {
	ID  string `json:"id"`
	PID int    `json:"pid"`
}

func newID() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random run id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// buildTopology creates the namespaces, links, addresses, routes and NAT.
// On error it removes what it made.
func buildTopology() (t *topology, err error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	t = &topology{id: id, podLink: "tpb" + id + "p", srvLink: "tpb" + id + "s"}
	defer func() {
		if err != nil {
			if cerr := t.close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return t, fmt.Errorf("create %s: %w", stateDir, err)
	}
	stPath := filepath.Join(stateDir, id+".json")
	b, _ := json.Marshal(state{ID: id, PID: os.Getpid()})
	if err := os.WriteFile(stPath, b, 0o644); err != nil {
		return t, fmt.Errorf("write %s: %w", stPath, err)
	}
	t.undo = append(t.undo, func() error { return removeIfExists(stPath) })

	if err := t.pickAddresses(); err != nil {
		return t, err
	}
	if t.pod, err = netns.Create(namePrefix + id + "-pod"); err != nil {
		return t, err
	}
	t.undo = append(t.undo, t.pod.Delete)
	if t.srv, err = netns.Create(namePrefix + id + "-srv"); err != nil {
		return t, err
	}
	t.undo = append(t.undo, t.srv.Delete)
	// The server closes first, so its namespace keeps a TIME_WAIT socket
	// per connection of a rate row: ~40 000 after one. The next path's
	// connections reach it from the same address with other TCP timestamps
	// (another socket's offset), and a SYN that meets such a TIME_WAIT
	// socket is refused (PAWS) and retried a second later: the router's
	// new-connections row read 0.13 after the local path's and 0.31 alone.
	// A small TIME_WAIT table drops the old ones at once, for every path
	// and the kernel alike.
	if err := t.srv.Do(func() error { return netns.WriteSysctl("net/ipv4/tcp_max_tw_buckets", "256") }); err != nil {
		return t, err
	}

	if err := t.addVeth(t.podLink, t.pod, t.podGW, t.podIP, t.podNet); err != nil {
		return t, err
	}
	if err := t.addVeth(t.srvLink, t.srv, t.srvGW, t.srvIP, t.srvNet); err != nil {
		return t, err
	}
	if err := addAddr(t.srvLink, t.natIP, t.srvNet.Bits()); err != nil {
		return t, err
	}
	for _, l := range []string{t.podLink, t.srvLink} {
		if err := netns.WriteSysctl(fmt.Sprintf("net/ipv4/conf/%s/forwarding", l), "1"); err != nil {
			return t, err
		}
	}
	if err := t.addRules(); err != nil {
		return t, err
	}
	// Nothing may leave the machine: the server's address must route over
	// the bench's own link before any client sends to it.
	link, err := netlink.LinkByName(t.srvLink)
	if err != nil {
		return t, fmt.Errorf("find %s: %w", t.srvLink, err)
	}
	routes, err := netlink.RouteGet(t.srvIP.AsSlice())
	if err != nil || len(routes) == 0 || routes[0].LinkIndex != link.Attrs().Index {
		return t, fmt.Errorf("the host does not route %s over %s (routes %v, err %v): refusing to send traffic", t.srvIP, t.srvLink, routes, err)
	}
	return t, nil
}

// ensureForwarding switches forwarding back on for the bench's two links
// if something turned it off: writing net.ipv4.ip_forward (as a test
// harness restoring it does) resets it on every link. It says whether it
// had to.
func (t *topology) ensureForwarding() (bool, error) {
	restored := false
	for _, l := range []string{t.podLink, t.srvLink} {
		key := fmt.Sprintf("net/ipv4/conf/%s/forwarding", l)
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		if err != nil {
			return restored, fmt.Errorf("read sysctl %s: %w", key, err)
		}
		if strings.TrimSpace(string(b)) == "1" {
			continue
		}
		if err := netns.WriteSysctl(key, "1"); err != nil {
			return restored, err
		}
		restored = true
	}
	return restored, nil
}

// pickAddresses takes a /30 (pod) and a /29 (server) inside a random
// 10.x.y.0/28 that no host route overlaps.
func (t *topology) pickAddresses() error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list host routes: %w", err)
	}
	for range 50 {
		var b [2]byte
		rand.Read(b[:])
		base := netip.AddrFrom4([4]byte{10, 100 + b[0]%100, b[1], 16 * (b[0] % 16)})
		block := netip.PrefixFrom(base, 28)
		if overlapsRoute(block, routes) {
			continue
		}
		a := base.As4()
		at := func(n byte) netip.Addr { c := a; c[3] = n; return netip.AddrFrom4(c) }
		t.podNet, t.podGW, t.podIP = netip.PrefixFrom(at(a[3]), 30), at(a[3]+1), at(a[3]+2)
		t.srvNet, t.srvGW, t.srvIP, t.natIP = netip.PrefixFrom(at(a[3]+8), 29), at(a[3]+9), at(a[3]+10), at(a[3]+11)
		return nil
	}
	return errors.New("found no free 10.x.y.z/28 for the bench's links")
}

func overlapsRoute(p netip.Prefix, routes []netlink.Route) bool {
	for _, r := range routes {
		if r.Dst == nil {
			continue // the default route
		}
		ones, _ := r.Dst.Mask.Size()
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if ok && ones > 0 && netip.PrefixFrom(ip.Unmap(), ones).Overlaps(p) {
			return true
		}
	}
	return false
}

// addVeth links ns to the host: hostName (hostIP) on the host, eth0 (nsIP)
// inside, with a default route inside via hostIP.
func (t *topology) addVeth(hostName string, ns *netns.Namespace, hostIP, nsIP netip.Addr, subnet netip.Prefix) error {
	la := netlink.NewLinkAttrs()
	la.Name = hostName
	veth := &netlink.Veth{LinkAttrs: la, PeerName: hostName + "x"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", hostName, err)
	}
	t.undo = append(t.undo, func() error { return deleteLink(hostName) })
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("find %s: %w", hostName, err)
	}
	peer, err := netlink.LinkByName(hostName + "x")
	if err != nil {
		return fmt.Errorf("find %sx: %w", hostName, err)
	}
	fd, err := os.Open(ns.Path())
	if err != nil {
		return fmt.Errorf("open %s: %w", ns.Path(), err)
	}
	err = netlink.LinkSetNsFd(peer, int(fd.Fd()))
	fd.Close()
	if err != nil {
		return fmt.Errorf("move %sx into %s: %w", hostName, ns.Name(), err)
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: netns.IPNet(netip.PrefixFrom(hostIP, subnet.Bits()))}); err != nil {
		return fmt.Errorf("address %s on %s: %w", hostIP, hostName, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("set %s up: %w", hostName, err)
	}
	return ns.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo in %s: %w", ns.Name(), err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up in %s: %w", ns.Name(), err)
		}
		in, err := netlink.LinkByName(hostName + "x")
		if err != nil {
			return fmt.Errorf("find %sx in %s: %w", hostName, ns.Name(), err)
		}
		if err := netlink.LinkSetName(in, "eth0"); err != nil {
			return fmt.Errorf("rename %sx to eth0: %w", hostName, err)
		}
		if err := netlink.AddrAdd(in, &netlink.Addr{IPNet: netns.IPNet(netip.PrefixFrom(nsIP, subnet.Bits()))}); err != nil {
			return fmt.Errorf("address %s in %s: %w", nsIP, ns.Name(), err)
		}
		if err := netlink.LinkSetUp(in); err != nil {
			return fmt.Errorf("set eth0 up in %s: %w", ns.Name(), err)
		}
		gw := &netlink.Route{LinkIndex: in.Attrs().Index, Gw: hostIP.AsSlice()}
		if err := netlink.RouteAdd(gw); err != nil {
			return fmt.Errorf("default route via %s in %s: %w", hostIP, ns.Name(), err)
		}
		return nil
	})
}

func addAddr(link string, a netip.Addr, bits int) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find %s: %w", link, err)
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: netns.IPNet(netip.PrefixFrom(a, bits))}); err != nil {
		return fmt.Errorf("address %s on %s: %w", a, link, err)
	}
	return nil
}

func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// rules are the host's NAT and forwarding rules, each tagged with the run's
// comment so a later run can find them.
func (t *topology) rules() [][3]any {
	c := []string{"-m", "comment", "--comment", namePrefix + t.id}
	with := func(r ...string) []string { return append(r, c...) }
	return [][3]any{
		{"nat", "POSTROUTING", with("-s", t.podNet.String(), "-o", t.srvLink, "-j", "SNAT", "--to-source", t.natIP.String())},
		{"filter", "FORWARD", with("-i", t.podLink, "-o", t.srvLink, "-j", "ACCEPT")},
		{"filter", "FORWARD", with("-i", t.srvLink, "-o", t.podLink, "-j", "ACCEPT")},
	}
}

func (t *topology) addRules() error {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	for _, r := range t.rules() {
		table, chain, spec := r[0].(string), r[1].(string), r[2].([]string)
		// Inserted first, so a host FORWARD policy of DROP does not stop it.
		if err := ipt.Insert(table, chain, 1, spec...); err != nil {
			return fmt.Errorf("iptables -t %s -I %s %s: %w", table, chain, strings.Join(spec, " "), err)
		}
		t.undo = append(t.undo, func() error { return ipt.DeleteIfExists(table, chain, spec...) })
	}
	return nil
}

// close removes everything, newest first, and reports every failure.
func (t *topology) close() error {
	var errs []error
	for i := len(t.undo) - 1; i >= 0; i-- {
		if err := t.undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	t.undo = nil
	return errors.Join(errs...)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// sweepStale removes what bench runs that no longer live left behind:
// their namespaces, links, rules and state files.
func sweepStale() []string {
	entries, _ := os.ReadDir(stateDir)
	var removed []string
	for _, e := range entries {
		path := filepath.Join(stateDir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var st state
		if json.Unmarshal(b, &st) != nil || st.ID == "" || strings.ContainsAny(st.ID, "/ ") {
			continue
		}
		if st.PID > 0 && syscall.Kill(st.PID, 0) == nil && isBench(st.PID) {
			continue
		}
		t := &topology{id: st.ID, podLink: "tpb" + st.ID + "p", srvLink: "tpb" + st.ID + "s"}
		for _, suffix := range []string{"-pod", "-srv"} {
			if ns, err := netns.Open(namePrefix + st.ID + suffix); err == nil {
				netns.KillProcesses(ns)
				ns.Delete()
			}
		}
		deleteLink(t.podLink)
		deleteLink(t.srvLink)
		// Best effort, as the rest of the sweep: what stays is retried next time.
		_ = netns.RemoveTaggedRules(iptables.ProtocolIPv4, namePrefix+st.ID)
		os.Remove(path)
		removed = append(removed, st.ID)
	}
	return removed
}

func isBench(pid int) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil && strings.Contains(filepath.Base(exe), "bench")
}
