package cluster

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// The cluster network. Every cluster reuses it: each lives in namespaces
// of its own, so parallel clusters never meet.
var (
	subnet4  = netip.MustParsePrefix("10.244.0.0/24")
	subnet6  = netip.MustParsePrefix("fd10:244::/64")
	gateway4 = netip.MustParseAddr("10.244.0.1")
	gateway6 = netip.MustParseAddr("fd10:244::1")
)

const (
	// dnsPodName is the pod dnsmasq runs in; no test pod may take it.
	dnsPodName = "dns"
	// dnsHostNum is the DNS pod's last address byte; test pods start at firstPodNum.
	dnsHostNum  = 2
	firstPodNum = 10
	lastPodNum  = 254
	// ServiceDomain is where every pod's service name lives.
	ServiceDomain = "default.svc.cluster.local"
)

// Cluster is one test's namespace cluster. Create it with New; it is
// removed in the test's Cleanup.
type Cluster struct {
	id      string // 6 random characters
	prefix  string // "tpc-<id>": every name the cluster creates starts with it
	dir     string // temp dir for resolv.conf, hosts, dnsmasq files
	netName string // the cluster network namespace (holds the bridge)
	netNS   *netns.Namespace
	netH    *netlink.Handle
	bridge  netlink.Link
	dns     *dnsServer

	// netMu serialises changes to the cluster network through netH.
	netMu sync.Mutex

	mu      sync.Mutex
	pods    []*Pod
	nextNum int
	procs   []*Process
	closed  bool
}

// New builds an empty cluster (the network, the bridge and the DNS pod)
// and registers its removal with t.Cleanup. It stops the test when root or
// dnsmasq is missing (see netnstest.Need).
func New(t TB) *Cluster {
	t.Helper()
	netnstest.RequireRoot(t)
	dnsmasq := netnstest.RequireCommand(t, dnsmasqBinary, "dnsmasq-base")

	id, err := randomID()
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	c := &Cluster{
		id:      id,
		prefix:  "tpc-" + id,
		nextNum: firstPodNum,
	}
	c.netName = c.prefix
	t.Cleanup(func() {
		if err := c.close(); err != nil {
			t.Errorf("cluster %s cleanup: %v", c.prefix, err)
		}
	})

	sweepOnce.Do(func() {
		removed, err := sweepStale()
		if len(removed) > 0 {
			t.Logf("removed what dead test runs left: %s", strings.Join(removed, ", "))
		}
		if err != nil {
			t.Logf("removing what dead test runs left: %v", err)
		}
	})
	c.dir, err = os.MkdirTemp("", clusterDirPattern(c.prefix))
	if err != nil {
		t.Fatalf("cluster %s: make temp dir: %v", c.prefix, err)
	}
	if err := c.buildNetwork(); err != nil {
		t.Fatalf("cluster %s: %v", c.prefix, err)
	}
	dnsPod, err := c.addPod(dnsPodName, dnsHostNum)
	if err != nil {
		t.Fatalf("cluster %s: DNS pod: %v", c.prefix, err)
	}
	c.dns = newDNSServer(c, dnsPod, dnsmasq)
	if err := c.dns.restart(t); err != nil {
		t.Fatalf("cluster %s: %v", c.prefix, err)
	}
	return c
}

// ID is the cluster's random 6-character id.
func (c *Cluster) ID() string { return c.id }

// Prefix is "tpc-<id>", the start of every namespace, link and file name
// the cluster creates.
func (c *Cluster) Prefix() string { return c.prefix }

// Network is the name of the namespace that holds the cluster's bridge.
func (c *Cluster) Network() string { return c.netName }

// Subnet is the pods' IPv4 subnet (the same in every cluster).
func (c *Cluster) Subnet() netip.Prefix { return subnet4 }

// Subnet6 is the pods' IPv6 ULA subnet.
func (c *Cluster) Subnet6() netip.Prefix { return subnet6 }

// Gateway is the bridge's IPv4 address, every pod's default route.
func (c *Cluster) Gateway() netip.Addr { return gateway4 }

// DNS is the pod dnsmasq runs in; its IP is every pod's nameserver.
func (c *Cluster) DNS() *Pod { return c.dns.pod }

// Pod returns the pod called name, or nil.
func (c *Cluster) Pod(name string) *Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.pods {
		if p.name == name {
			return p
		}
	}
	return nil
}

// AddPod adds a pod: a namespace with a veth into the bridge, the next
// free address, resolv.conf and hosts files, and the DNS name
// NAME.default.svc.cluster.local (a Kubernetes service of the same name).
// The name answers A only, as in a single-stack cluster; the pod's IPv6
// address is there for tests that add AAAA records (AddHost).
// name must be a DNS label other than "dns".
func (c *Cluster) AddPod(t TB, name string) *Pod {
	t.Helper()
	if err := validPodName(name); err != nil {
		t.Fatalf("cluster %s: %v", c.prefix, err)
	}
	c.mu.Lock()
	num := c.nextNum
	if num > lastPodNum {
		c.mu.Unlock()
		t.Fatalf("cluster %s: pod %q: the subnet %s is full (%d pods)", c.prefix, name, subnet4, lastPodNum-firstPodNum+1)
	}
	c.nextNum++
	c.mu.Unlock()

	p, err := c.addPod(name, num)
	if err != nil {
		t.Fatalf("cluster %s: pod %q: %v", c.prefix, name, err)
	}
	c.dns.add(t, hostRecord(p.FQDN(), p.ip4))
	return p
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func validPodName(name string) error {
	if !labelRE.MatchString(name) {
		return fmt.Errorf("pod name %q is not valid: want a DNS label (lower-case letters, digits and '-', at most 63, not starting or ending with '-')", name)
	}
	if name == dnsPodName {
		return fmt.Errorf("pod name %q is taken by the cluster's DNS server: choose another name", name)
	}
	return nil
}

// buildNetwork creates the cluster namespace and its bridge with the gateway addresses.
func (c *Cluster) buildNetwork() error {
	ns, err := netns.Create(c.netName)
	if err != nil {
		return err
	}
	c.netNS = ns
	c.netH, err = netlinkAt(ns)
	if err != nil {
		return err
	}
	if err := bringUp(c.netH, "lo"); err != nil {
		return fmt.Errorf("namespace %s: %w", c.netName, err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.prefix + "-br"}}
	if err := c.netH.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s in %s: %w", br.Name, c.netName, err)
	}
	link, err := c.netH.LinkByName(br.Name)
	if err != nil {
		return fmt.Errorf("find bridge %s in %s: %w", br.Name, c.netName, err)
	}
	c.bridge = link
	for _, a := range []netip.Prefix{
		netip.PrefixFrom(gateway4, subnet4.Bits()),
		netip.PrefixFrom(gateway6, subnet6.Bits()),
	} {
		if err := c.netH.AddrAdd(link, nodadAddr(a)); err != nil {
			return fmt.Errorf("address %s on bridge %s: %w", a, br.Name, err)
		}
	}
	if err := c.netH.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up bridge %s: %w", br.Name, err)
	}
	return nil
}

// addPod creates the pod's namespace, wires it to the bridge and writes its files.
func (c *Cluster) addPod(name string, num int) (*Pod, error) {
	p := &Pod{
		c:      c,
		name:   name,
		nsName: c.prefix + "-" + name,
		ip4:    ip4For(num),
		ip6:    ip6For(num),
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("cluster is already removed")
	}
	for _, q := range c.pods {
		if q.name == name {
			c.mu.Unlock()
			return nil, fmt.Errorf("pod name %q is already in the cluster", name)
		}
	}
	// Registered before it exists, so cleanup removes what a failure leaves.
	c.pods = append(c.pods, p)
	c.mu.Unlock()

	if err := p.writeFiles(c.dir); err != nil {
		return nil, err
	}
	ns, err := netns.Create(p.nsName)
	if err != nil {
		return nil, err
	}
	p.network = ns
	h, err := vns.GetFromPath(ns.Path())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ns, err)
	}
	defer h.Close()
	ph, err := netlinkAt(ns)
	if err != nil {
		return nil, err
	}
	defer ph.Close()

	// Both ends are created straight in their namespaces: the host never sees them.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: fmt.Sprintf("%s-%d", c.prefix, num), MasterIndex: c.bridge.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(h),
	}
	c.netMu.Lock()
	err = c.netH.LinkAdd(veth)
	if err == nil {
		err = bringUp(c.netH, veth.Name)
	}
	c.netMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("add veth %s (peer eth0 in %s): %w", veth.Name, p.nsName, err)
	}
	if err := bringUp(ph, "lo"); err != nil {
		return nil, fmt.Errorf("namespace %s: %w", p.nsName, err)
	}
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		return nil, fmt.Errorf("find eth0 in %s: %w", p.nsName, err)
	}
	for _, a := range []netip.Prefix{
		netip.PrefixFrom(p.ip4, subnet4.Bits()),
		netip.PrefixFrom(p.ip6, subnet6.Bits()),
	} {
		if err := ph.AddrAdd(eth0, nodadAddr(a)); err != nil {
			return nil, fmt.Errorf("address %s on eth0 in %s: %w", a, p.nsName, err)
		}
	}
	if err := ph.LinkSetUp(eth0); err != nil {
		return nil, fmt.Errorf("bring up eth0 in %s: %w", p.nsName, err)
	}
	for _, gw := range []netip.Addr{gateway4, gateway6} {
		r := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.IP(gw.AsSlice())}
		if err := ph.RouteAdd(r); err != nil {
			return nil, fmt.Errorf("default route via %s in %s: %w", gw, p.nsName, err)
		}
	}
	return p, nil
}

// netlinkAt returns a netlink handle whose sockets live in ns.
func netlinkAt(ns *netns.Namespace) (*netlink.Handle, error) {
	h, err := vns.GetFromPath(ns.Path())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ns, err)
	}
	defer h.Close() // the handle's sockets keep what they need
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns, err)
	}
	return nh, nil
}

// ip4For is the pod's address in the subnet: 10.244.0.NUM.
func ip4For(num int) netip.Addr {
	a := subnet4.Addr().As4()
	a[3] = byte(num)
	return netip.AddrFrom4(a)
}

// ip6For is the pod's ULA address: the IPv4 last byte's decimal digits
// read as hex (10.244.0.12 → fd10:244::12), easy to tell apart by eye.
func ip6For(num int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("%s%d", subnet6.Addr(), num))
}

// nodadAddr skips IPv6 duplicate address detection, so the address works
// at once; nothing else can hold it on a private bridge.
func nodadAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{
		IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Flags: unix.IFA_F_NODAD,
	}
}

func bringUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up link %s: %w", name, err)
	}
	return nil
}

// track remembers a process so close can stop it if its own test did not.
func (c *Cluster) track(p *Process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
}

// close stops every process, then deletes the pods' namespaces (their
// veths go with them), the cluster namespace (the bridge goes with it)
// and the temp dir. It keeps going past errors and returns them all.
func (c *Cluster) close() error {
	c.mu.Lock()
	c.closed = true
	procs, pods := c.procs, c.pods
	c.mu.Unlock()

	var errs []error
	for _, p := range procs {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.netH != nil {
		c.netH.Close()
	}
	for _, p := range pods {
		if p.network != nil {
			errs = append(errs, removeNamespace(p.network))
		}
	}
	if c.netNS != nil {
		errs = append(errs, removeNamespace(c.netNS))
	}
	if c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.dir, err))
		}
	}
	return errors.Join(errs...)
}

const idChars = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random cluster id: %w", err)
	}
	for i := range b {
		b[i] = idChars[int(b[i])%len(idChars)]
	}
	return string(b), nil
}
