package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/test/apps/uwu"
)

func TestMain(m *testing.M) { Main(m) }

const waitListen = 15 * time.Second

// leftovers lists what a removed cluster must no longer have on the host:
// named namespaces and links with its prefix, processes in its
// namespaces, its temp dir.
type leftovers struct {
	prefix string
	dir    string
	inodes map[uint64]string // namespace inode → name, taken while it existed
	pids   []int
}

func snapshot(t *testing.T, c *Cluster) leftovers {
	t.Helper()
	l := leftovers{prefix: c.prefix, dir: c.dir, inodes: map[uint64]string{}}
	namespaces := []*netns.Namespace{c.netNS}
	for _, p := range c.pods {
		namespaces = append(namespaces, p.network)
	}
	for _, n := range namespaces {
		var st syscall.Stat_t
		if err := syscall.Stat(n.Path(), &st); err != nil {
			t.Fatalf("stat namespace %s: %v", n.Name(), err)
		}
		l.inodes[st.Ino] = n.Name()
	}
	for _, p := range c.procs {
		l.pids = append(l.pids, p.Pid())
	}
	return l
}

func (l leftovers) check(t *testing.T) {
	t.Helper()
	names, err := netns.List(l.prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		t.Errorf("namespace %s is left", n)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("list host links: %v", err)
	}
	for _, link := range links {
		if strings.HasPrefix(link.Attrs().Name, l.prefix) {
			t.Errorf("link %s is left in the host namespace", link.Attrs().Name)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, f := range procs {
		target, err := os.Readlink(f)
		if err != nil {
			continue // the process just exited
		}
		var ino uint64
		if _, err := fmt.Sscanf(target, "net:[%d]", &ino); err == nil && l.inodes[ino] != "" {
			t.Errorf("process %s is still in namespace %s", filepath.Dir(filepath.Dir(f)), l.inodes[ino])
		}
	}
	for _, pid := range l.pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d the cluster started is still alive", pid)
		}
	}
	if _, err := os.Stat(l.dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s is left (stat: %v)", l.dir, err)
	}
}

// hostHasNoRouteInto checks, without sending a packet, that the host's
// routing table has no route into the cluster's subnets and would not use
// a cluster link for a pod's address.
func hostHasNoRouteInto(t *testing.T, c *Cluster, pod *Pod) {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("list host routes: %v", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue // a default route leads off the machine, never into the cluster
		}
		dst, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		bits, _ := r.Dst.Mask.Size()
		if bits == 0 {
			continue // the same default route, written as 0.0.0.0/0 or ::/0
		}
		p := netip.PrefixFrom(dst.Unmap(), bits)
		if p.Overlaps(c.Subnet()) || p.Overlaps(c.Subnet6()) {
			t.Errorf("host has a route into the cluster: %s", r)
		}
	}
	for _, ip := range []netip.Addr{pod.IP(), pod.IPv6()} {
		got, err := netlink.RouteGet(ip.AsSlice())
		if err != nil {
			continue // no route at all: even better
		}
		for _, r := range got {
			link, err := netlink.LinkByIndex(r.LinkIndex)
			if err == nil && strings.HasPrefix(link.Attrs().Name, c.prefix) {
				t.Errorf("host routes %s through cluster link %s", ip, link.Attrs().Name)
			}
			if r.Gw == nil && r.Dst != nil {
				t.Errorf("host treats %s as on-link (%s)", ip, r)
			}
		}
	}
}

func dig(t *testing.T, pod *Pod, args ...string) string {
	t.Helper()
	digBin := netnstest.RequireCommand(t, "dig", "dnsutils")
	out, err := pod.Run(t, append([]string{digBin, "+time=2", "+tries=2"}, args...)...)
	if err != nil {
		t.Fatalf("dig %s in pod %s: %v\n%s", strings.Join(args, " "), pod.Name(), err, out)
	}
	return strings.TrimSpace(out)
}

func TestClusterServesPodsByNameAndLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	netnstest.RequireRoot(t)
	curl := netnstest.RequireCommand(t, "curl", "curl")
	netnstest.RequireCommand(t, "dig", "dnsutils")
	uwuService := BuildApp(t, "./test/apps/uwu-service")

	var left leftovers
	t.Run("cluster", func(t *testing.T) {
		c := New(t)
		server := c.AddPod(t, "uwu-service")
		client := c.AddPod(t, "client")
		proc := server.Start(t, []string{uwuService, "--listen", ":8080"})
		server.WaitPort(t, 8080, waitListen)

		t.Run("the pod sees its own resolv.conf, hosts and hostname", func(t *testing.T) {
			out, err := client.Run(t, "sh", "-c", "cat /etc/resolv.conf; cat /etc/hosts; cat /proc/sys/kernel/hostname")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{
				"nameserver " + c.DNS().IP().String(),
				"search default.svc.cluster.local svc.cluster.local cluster.local",
				"options ndots:5",
				client.IP().String() + "\tclient",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("pod files lack %q:\n%s", want, out)
				}
			}
			if !strings.HasSuffix(strings.TrimSpace(out), "\nclient") {
				t.Errorf("pod hostname is not %q:\n%s", "client", out)
			}
		})

		t.Run("DNS answers short names, FQDNs, TCP, and NXDOMAIN for unknown names", func(t *testing.T) {
			if got := dig(t, client, "+search", "+short", "uwu-service"); got != server.IP().String() {
				t.Errorf("dig +search uwu-service = %q, want %s", got, server.IP())
			}
			if got := dig(t, client, "+short", server.FQDN()); got != server.IP().String() {
				t.Errorf("dig %s = %q, want %s", server.FQDN(), got, server.IP())
			}
			// Like a single-stack cluster: service names have no AAAA unless a test adds one.
			if got := dig(t, client, "+short", "AAAA", server.FQDN()); got != "" {
				t.Errorf("dig AAAA %s = %q, want no answer", server.FQDN(), got)
			}
			for _, name := range []string{"nosuch.default.svc.cluster.local", "example.com"} {
				if got := dig(t, client, name); !strings.Contains(got, "status: NXDOMAIN") {
					t.Errorf("dig of unknown name %s did not say NXDOMAIN:\n%s", name, got)
				}
			}
			if got := dig(t, client, "+tcp", "+search", "+short", "uwu-service"); got != server.IP().String() {
				t.Errorf("dig +tcp +search uwu-service = %q, want %s", got, server.IP())
			}
		})

		t.Run("SRV, TXT and extra AAAA records answer", func(t *testing.T) {
			srvName := "_http._tcp." + server.FQDN()
			c.AddSRV(t, srvName, server.FQDN(), 8080, 10, 5)
			c.AddTXT(t, server.FQDN(), "owner=uwu-team", "tier=backend, cute")
			c.AddHost(t, "v6only.example.test", netip.MustParseAddr("fd10:244::99"))
			c.AddHost(t, "dual."+ServiceDomain, server.IP(), server.IPv6())
			if got, want := dig(t, client, "+short", "SRV", srvName), "10 5 8080 "+server.FQDN()+"."; got != want {
				t.Errorf("dig SRV = %q, want %q", got, want)
			}
			if got, want := dig(t, client, "+short", "TXT", server.FQDN()), `"owner=uwu-team" "tier=backend, cute"`; got != want {
				t.Errorf("dig TXT = %q, want %q", got, want)
			}
			if got := dig(t, client, "+short", "AAAA", "v6only.example.test"); got != "fd10:244::99" {
				t.Errorf("dig AAAA v6only.example.test = %q, want fd10:244::99", got)
			}
			if got := dig(t, client, "+search", "+short", "AAAA", "dual"); got != server.IPv6().String() {
				t.Errorf("dig +search AAAA dual = %q, want %s", got, server.IPv6())
			}
			// A restart of dnsmasq keeps what it answered before.
			if got := dig(t, client, "+search", "+short", "uwu-service"); got != server.IP().String() {
				t.Errorf("after adding records, dig +search uwu-service = %q, want %s", got, server.IP())
			}
		})

		t.Run("a client pod reaches the service by short name and the service sees the pod's address", func(t *testing.T) {
			in := "Hello, are you there? Really lovely."
			out, err := client.Run(t, curl, "-sS", "--max-time", "10", "--data-binary", in, "http://uwu-service:8080/uwu")
			if err != nil {
				t.Fatal(err)
			}
			if out != uwu.Transform(in) {
				t.Errorf("curl http://uwu-service:8080/uwu = %q, want %q", out, uwu.Transform(in))
			}
			proc.WaitOutput(t, "] "+client.IP().String()+":", 5*time.Second)
		})

		t.Run("IPv6 between pods", func(t *testing.T) {
			url := "http://[" + server.IPv6().String() + "]:8080/uwu"
			out, err := client.Run(t, curl, "-sS", "--max-time", "10", "--data-binary", "hi", url)
			if err != nil || out != uwu.Transform("hi") {
				t.Errorf("curl %s = %q, %v", url, out, err)
			}
		})

		t.Run("Forward reaches the pod from the host loopback", func(t *testing.T) {
			addr := server.Forward(t, 8080)
			if ap := netip.MustParseAddrPort(addr); !ap.Addr().IsLoopback() {
				t.Fatalf("Forward returned %s, want a loopback address", addr)
			}
			resp, err := http.Post("http://"+addr+"/uwu", "text/plain", strings.NewReader("Hello, world"))
			if err != nil {
				t.Fatalf("POST through Forward: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != uwu.Transform("Hello, world") {
				t.Errorf("POST through Forward = %q, want %q", body, uwu.Transform("Hello, world"))
			}
			// The connection starts inside the pod, on its loopback.
			proc.WaitOutput(t, "] 127.0.0.1:", 5*time.Second)

			// A port nothing listens on: the host's connection is closed.
			closed := server.Forward(t, 8081)
			conn, err := net.Dial("tcp", closed)
			if err == nil {
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, rerr := conn.Read(make([]byte, 1))
				conn.Close()
				if rerr == nil {
					t.Errorf("Forward to a closed port delivered %d bytes, want the connection closed", n)
				}
			}
		})

		t.Run("the host has no route into the cluster", func(t *testing.T) {
			hostHasNoRouteInto(t, c, server)
		})

		t.Run("Pod.DialContext and HTTPClient start inside the pod", func(t *testing.T) {
			resp, err := client.HTTPClient().Post("http://"+netip.AddrPortFrom(server.IP(), 8080).String()+"/uwu", "text/plain", strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("POST from the client pod = %s", resp.Status)
			}
			if _, err := client.DialContext(context.Background(), "tcp", "uwu-service:8080"); err == nil {
				t.Errorf("DialContext with a name succeeded, want an error asking for IP:port")
			}
		})

		left = snapshot(t, c)
	})
	if t.Failed() && left.prefix == "" {
		return
	}
	left.check(t)
}

func TestParallelClustersAreIsolated(t *testing.T) {
	t.Parallel()
	netnstest.RequireRoot(t)
	uwuService := BuildApp(t, "./test/apps/uwu-service")

	a, b := New(t), New(t)
	if a.prefix == b.prefix {
		t.Fatalf("two clusters share the prefix %s", a.prefix)
	}
	serverA := a.AddPod(t, "web")
	serverB := b.AddPod(t, "web")
	clientB := b.AddPod(t, "client")
	if serverA.IP() != serverB.IP() {
		t.Fatalf("the same first pod got %s and %s: the subnet is meant to be reused", serverA.IP(), serverB.IP())
	}
	serverA.Start(t, []string{uwuService, "--listen", ":8080"})
	serverA.WaitPort(t, 8080, waitListen)

	// The same address in cluster B has nothing on 8080: refused, not A's server.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := clientB.DialContext(ctx, "tcp", netip.AddrPortFrom(serverB.IP(), 8080).String())
	if err == nil {
		conn.Close()
		t.Fatalf("cluster B's client reached port 8080 at %s, which only cluster A serves", serverB.IP())
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial from cluster B: %v, want connection refused", err)
	}
}

func TestAddPodRejectsDuplicatesAndBadNames(t *testing.T) {
	t.Parallel()
	netnstest.RequireRoot(t)
	c := New(t)
	c.AddPod(t, "one")
	if _, err := c.addPod("one", 99); err == nil || !strings.Contains(err.Error(), `"one"`) {
		t.Errorf("adding pod \"one\" twice: %v, want an error naming it", err)
	}
	if c.Pod("one") == nil || c.Pod("two") != nil {
		t.Errorf("Pod lookup: one=%v two=%v", c.Pod("one"), c.Pod("two"))
	}
}

func TestProcessesAreStoppedWithTheirTest(t *testing.T) {
	t.Parallel()
	netnstest.RequireRoot(t)
	c := New(t)
	pod := c.AddPod(t, "sleeper")
	var pid int
	t.Run("start", func(t *testing.T) {
		// sh traps nothing: SIGTERM ends it and its sleep child (same group).
		p := pod.Start(t, []string{"sh", "-c", "sleep 300 & echo started; wait"})
		p.WaitOutput(t, "started", 10*time.Second)
		pid = p.Pid()
	})
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("process %d is alive after its test ended", pid)
	}
	out, err := pod.Run(t, "sh", "-c", "exit 3")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Run(exit 3) = %q, %v, want an error with the exit status", out, err)
	}
	if _, err := pod.Run(t, "no-such-program-"+strconv.Itoa(pid)); err == nil {
		t.Errorf("Run of a missing program succeeded")
	}
}
