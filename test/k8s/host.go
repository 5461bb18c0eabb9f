package k8s

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
)

// sysctls are the settings kubelet, kube-proxy, CNI or the harness may
// change; their values before the cluster are restored after it.
var sysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	"kernel/panic",
	"kernel/panic_on_oops",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// iptablesTables are the tables whose chains are recorded before the
// cluster starts; chains added after that are removed by teardown.
var iptablesTables = []string{"filter", "nat", "mangle", "raw"}

// saveHostState records the sysctls, the iptables chains and the
// nftables tables as they are before anything starts.
func saveHostState(dir string) error {
	var b strings.Builder
	for _, k := range sysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			continue // not on this kernel
		}
		fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(string(v)))
	}
	if err := os.WriteFile(filepath.Join(dir, "sysctl.pre"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("record sysctls: %w", err)
	}
	b.Reset()
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
		for _, t := range iptablesTables {
			chains, err := ipt.ListChains(t)
			if err != nil {
				continue
			}
			for _, ch := range chains {
				fmt.Fprintf(&b, "%d %s %s\n", proto, t, ch)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "iptables.pre"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("record iptables chains: %w", err)
	}
	tables, _ := nftTables()
	if err := os.WriteFile(filepath.Join(dir, "nft.pre"), []byte(strings.Join(tables, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("record nftables tables: %w", err)
	}
	return nil
}

// setupNetwork creates the bridge with the gateway (and DNS) address,
// the guard chain, and the CNI plugins and configuration containerd's
// CRI plugin reads.
func setupNetwork(dir, cniBin string) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", BridgeName, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: Gateway.AsSlice(), Mask: net.CIDRMask(PodSubnet.Bits(), 32)}}
	if err := netlink.AddrAdd(br, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", Gateway, BridgeName, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("bring %s up: %w", BridgeName, err)
	}
	// Pods may talk to each other, to services and to this machine, and
	// nowhere else: the machine's default route must not carry them out.
	ipt, err := iptables.New()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	if err := ipt.NewChain("filter", guardChain); err != nil {
		return fmt.Errorf("create chain %s: %w", guardChain, err)
	}
	if err := ipt.Append("filter", guardChain, "-s", PodSubnet.String(), "!", "-o", BridgeName, "-j", "DROP"); err != nil {
		return fmt.Errorf("fill chain %s: %w", guardChain, err)
	}
	if err := ipt.Insert("filter", "FORWARD", 1, "-j", guardChain); err != nil {
		return fmt.Errorf("hook chain %s: %w", guardChain, err)
	}
	for _, k := range []string{"net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"} {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte("1"), 0o644); err != nil {
			return fmt.Errorf("set %s: %w", k, err)
		}
	}
	for _, d := range []string{"bin", "net.d"} {
		if err := os.MkdirAll(filepath.Join(CNIDir, d), 0o755); err != nil {
			return fmt.Errorf("make CNI dir: %w", err)
		}
	}
	plugins, err := os.ReadDir(cniBin)
	if err != nil {
		return fmt.Errorf("CNI plugins: %w", err)
	}
	for _, p := range plugins {
		dst := filepath.Join(CNIDir, "bin", p.Name())
		os.Remove(dst)
		if err := os.Symlink(filepath.Join(cniBin, p.Name()), dst); err != nil {
			return fmt.Errorf("install CNI plugin %s: %w", p.Name(), err)
		}
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "tpk8s",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q, "gateway": %q}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
`, BridgeName, filepath.Join(dir, "cni", "ipam"), PodSubnet, Gateway)
	if err := os.WriteFile(filepath.Join(CNIDir, "net.d", "10-tpk8s.conflist"), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	return nil
}

// teardown removes what a cluster (live or dead) left on the machine,
// from the records in dir; every step is best effort and says what failed.
func teardown(dir string, log io.Writer) {
	warn := func(format string, args ...any) { fmt.Fprintf(log, "k8s harness: teardown: "+format+"\n", args...) }
	killRecorded(dir)
	removeSandboxes(log)
	removeImages(dir, log)
	removeRegistryStorage(dir, warn)
	// Kubelet's mounts (secrets, tokens, the pods' volumes) and the CRI's
	// netns mounts, deepest first.
	for _, m := range mountsUnder(dir, "/run/netns/cni-") {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			warn("unmount %s: %v", m, err)
		}
	}
	if l, err := netlink.LinkByName(BridgeName); err == nil {
		links, _ := netlink.LinkList()
		for _, v := range links {
			if v.Attrs().MasterIndex == l.Attrs().Index {
				netlink.LinkDel(v)
			}
		}
		if err := netlink.LinkDel(l); err != nil {
			warn("delete bridge %s: %v", BridgeName, err)
		}
	}
	restoreIptables(dir, warn)
	restoreNft(dir, warn)
	removeCgroups(warn)
	restoreSysctls(dir, warn)
	os.Remove(filepath.Join(CNIDir, "net.d", "10-tpk8s.conflist"))
	if bins, err := os.ReadDir(filepath.Join(CNIDir, "bin")); err == nil {
		for _, b := range bins {
			os.Remove(filepath.Join(CNIDir, "bin", b.Name()))
		}
	}
	// Fixed paths kubelet and libcni use whatever their configuration says.
	os.Remove("/var/lib/kubelet/device-plugins/kubelet.sock")
	for _, d := range []string{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins", "/var/lib/kubelet/pod-resources", "/var/lib/kubelet"} {
		os.Remove(d)
	}
	if res, err := os.ReadDir("/var/lib/cni/results"); err == nil {
		for _, r := range res {
			if strings.HasPrefix(r.Name(), "tpk8s-") {
				os.Remove(filepath.Join("/var/lib/cni/results", r.Name()))
			}
		}
	}
	os.Remove("/var/lib/cni/results")
	os.Remove("/var/lib/cni")
	if err := os.RemoveAll(dir); err != nil {
		warn("remove %s: %v", dir, err)
	}
}

// mountsUnder lists the mount points below the given prefixes, deepest first.
func mountsUnder(prefixes ...string) []string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		m := strings.ReplaceAll(fields[1], `\040`, " ")
		for _, p := range prefixes {
			if strings.HasPrefix(m, p) {
				out = append(out, m)
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// restoreIptables deletes the chains that were not there before the
// cluster (KUBE-*, CNI-*, ours), and every rule that jumps to them.
func restoreIptables(dir string, warn func(string, ...any)) {
	pre, err := os.ReadFile(filepath.Join(dir, "iptables.pre"))
	if err != nil {
		warn("no iptables record (%v): removing KUBE-*, CNI-* and %s chains", err, guardChain)
	}
	before := map[string]bool{}
	for _, line := range strings.Split(string(pre), "\n") {
		before[line] = true
	}
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			warn("iptables: %v", err)
			continue
		}
		cmd := "iptables"
		if proto == iptables.ProtocolIPv6 {
			cmd = "ip6tables"
		}
		for _, t := range iptablesTables {
			chains, err := ipt.ListChains(t)
			if err != nil {
				continue
			}
			added := map[string]bool{}
			for _, ch := range chains {
				ours := strings.HasPrefix(ch, "KUBE-") || strings.HasPrefix(ch, "CNI-") || ch == guardChain
				if ours && !before[fmt.Sprintf("%d %s %s", proto, t, ch)] {
					added[ch] = true
				}
			}
			if len(added) == 0 {
				continue
			}
			// Jumps into the added chains from chains that stay.
			for _, ch := range chains {
				if added[ch] {
					continue
				}
				rules, _ := ipt.List(t, ch)
				for _, r := range rules {
					f := strings.Fields(r)
					if len(f) < 2 || f[0] != "-A" {
						continue
					}
					i := slices.Index(f, "-j")
					if i < 0 || i+1 >= len(f) || !added[f[i+1]] {
						continue
					}
					// The rule as iptables -S prints it is shell-quoted.
					del := cmd + " -w -t " + t + " -D" + strings.TrimPrefix(r, "-A")
					if out, err := exec.Command("sh", "-c", del).CombinedOutput(); err != nil {
						warn("%s: %v %s", del, err, out)
					}
				}
			}
			for ch := range added {
				ipt.ClearChain(t, ch)
			}
			for ch := range added {
				if err := ipt.DeleteChain(t, ch); err != nil {
					warn("delete %s chain %s/%s: %v", cmd, t, ch, err)
				}
			}
		}
	}
}

func nftTables() ([]string, error) {
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return nil, err
	}
	var tables []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			tables = append(tables, l)
		}
	}
	return tables, nil
}

// restoreNft deletes the nftables tables kube-proxy may add (its
// nftables-mode table) that were not there before.
func restoreNft(dir string, warn func(string, ...any)) {
	pre, err := os.ReadFile(filepath.Join(dir, "nft.pre"))
	if err != nil {
		return
	}
	before := strings.Split(string(pre), "\n")
	now, err := nftTables()
	if err != nil {
		return
	}
	for _, t := range now {
		f := strings.Fields(t) // table FAMILY NAME
		if len(f) != 3 || slices.Contains(before, t) || !strings.Contains(f[2], "kube") {
			continue
		}
		if out, err := exec.Command("nft", "delete", "table", f[1], f[2]).CombinedOutput(); err != nil {
			warn("nft delete table %s %s: %v %s", f[1], f[2], err, out)
		}
	}
}

// removeCgroups removes the cgroups kubelet made (kubepods) in every
// hierarchy, deepest first; a cgroup with a process in it stays and is
// reported.
func removeCgroups(warn func(string, ...any)) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*")
	if extra, _ := filepath.Glob("/sys/fs/cgroup/kubepods*"); len(extra) > 0 {
		roots = append(roots, extra...)
	}
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !os.IsNotExist(err) {
				warn("remove cgroup %s: %v", d, err)
			}
		}
	}
}

func restoreSysctls(dir string, warn func(string, ...any)) {
	pre, err := os.ReadFile(filepath.Join(dir, "sysctl.pre"))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(pre), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		cur, _ := os.ReadFile(filepath.Join("/proc/sys", k))
		if strings.TrimSpace(string(cur)) == v {
			continue
		}
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			warn("restore sysctl %s=%s: %v", k, v, err)
		}
	}
}
