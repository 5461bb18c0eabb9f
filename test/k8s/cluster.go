package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// The cluster's fixed names and networks. Pods get addresses from a /24
// that nothing else on the machine uses (the namespace "cluster" of
// test/cluster keeps its 10.244.0.0/24 inside its own namespaces).
const (
	NodeName = "tp-k8s-node"
	// BridgeName does not start with "tp": the sandbox's tests treat new
	// host links named tp* as their own leftovers.
	BridgeName    = "k8stp0"
	ClusterDomain = "cluster.local"
	// RunDir holds everything a running cluster keeps; its presence
	// without a live owner means a dead run to clean up.
	RunDir = "/run/trafficpolice-k8s"
	// ContainerdSocket is the machine's containerd, shared with
	// `sandbox run --image` (.ci/containerd.sh starts it with the CRI
	// plugin Kubernetes needs). Its /run/containerd and /opt/containerd
	// cannot be moved, so a second daemon is not an option.
	ContainerdSocket = "/run/containerd/containerd.sock"
	// CNIDir is where that containerd's CRI plugin finds CNI plugins
	// (bin/) and network configurations (net.d/); see .ci/containerd.sh.
	CNIDir = "/run/tp-containerd/cni"
	// guardChain drops forwarded pod traffic that would leave the machine.
	guardChain = "TP-K8S-GUARD"
)

var (
	PodSubnet     = netip.MustParsePrefix("10.236.0.0/24")
	Gateway       = netip.MustParseAddr("10.236.0.1") // the bridge: also the cluster DNS
	ServiceSubnet = netip.MustParsePrefix("10.237.0.0/16")
	// DNSAddr is the cluster DNS server's address: the bridge, where
	// CoreDNS listens.
	DNSAddr = Gateway
)

// Cluster is a running single-node Kubernetes.
type Cluster struct {
	// Kubeconfig is an admin (system:masters) kubeconfig.
	Kubeconfig string
	// Client is an admin clientset; REST its config.
	Client *kubernetes.Clientset
	REST   *rest.Config
	// Bin are the binaries it runs (Bin.Kubectl() for kubectl).
	Bin Binaries
	// NodeIP is the node's address (this machine's own).
	NodeIP netip.Addr
	// AgentImage is the agent image built from this tree, pushed to the
	// cluster's registry (127.0.0.1:PORT/trafficpolice/agent:k8s-test):
	// the node pulls it, as a user's nodes pull theirs.
	AgentImage string
	// Registry is the cluster's OCI registry, as host:port.
	Registry string

	dir        string
	pki        *pki
	log        io.Writer
	lock       *os.File
	components []*component
	server     string
	appImage   string // testapp's image when not AppImage (Attach)
}

// Start builds (or finds cached) binaries and starts a cluster, with the
// test images imported. Only one cluster runs on a machine at a time:
// Start waits for another test binary's cluster to stop. Call Stop when
// done, also on failure.
func Start(log io.Writer) (_ *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the Kubernetes harness needs root (kubelet, CNI, iptables)")
	}
	bin, err := Build(log)
	if err != nil {
		return nil, err
	}
	lock, err := lockMachine(log)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Bin: bin, dir: RunDir, log: log, lock: lock}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if _, err := os.Stat(RunDir); err == nil {
		fmt.Fprintf(log, "k8s harness: removing what a dead run left in %s\n", RunDir)
		teardown(RunDir, log)
	}
	for _, d := range []string{"logs", "pids", "etcd", "kubelet", "cni", "images"} {
		if err := os.MkdirAll(filepath.Join(RunDir, d), 0o755); err != nil {
			return c, fmt.Errorf("make run dir: %w", err)
		}
	}
	if err := checkContainerd(); err != nil {
		return c, err
	}
	if c.NodeIP, err = nodeIP(); err != nil {
		return c, err
	}
	if err := saveHostState(RunDir); err != nil {
		return c, err
	}
	start := time.Now()
	if err := c.startControlPlane(); err != nil {
		return c, err
	}
	if err := c.startNode(); err != nil {
		return c, err
	}
	fmt.Fprintf(log, "k8s harness: cluster ready in %s (kubeconfig %s)\n", time.Since(start).Round(100*time.Millisecond), c.Kubeconfig)
	return c, nil
}

// lockMachine takes the machine-wide cluster lock, waiting up to 30
// minutes for another run's cluster.
func lockMachine(log io.Writer) (*os.File, error) {
	f, err := os.OpenFile("/run/trafficpolice-k8s.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the cluster lock: %w", err)
	}
	deadline := time.Now().Add(30 * time.Minute)
	for said := false; ; said = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("take the cluster lock /run/trafficpolice-k8s.lock: %w", err)
		}
		if !said {
			fmt.Fprintln(log, "k8s harness: another test run has the cluster; waiting for it")
		}
		time.Sleep(time.Second)
	}
}

// nodeIP is the machine's own address that a default route would use:
// kube-apiserver advertises it and kubelet registers it (loopback is
// refused for both). Nothing is sent to find it.
func nodeIP() (netip.Addr, error) {
	routes, err := netlink.RouteGet(net.IPv4(192, 0, 2, 200))
	if err == nil {
		for _, r := range routes {
			if a, ok := netip.AddrFromSlice(r.Src.To4()); ok && !a.IsLoopback() {
				return a, nil
			}
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list this machine's addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip.IsGlobalUnicast() && !PodSubnet.Contains(ip) {
			return ip, nil
		}
	}
	return netip.Addr{}, errors.New("this machine has no non-loopback IPv4 address for the node")
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) ports(n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

func (c *Cluster) startControlPlane() error {
	p, err := newPKI(filepath.Join(c.dir, "pki"))
	if err != nil {
		return err
	}
	c.pki = p
	ports, err := c.ports(6)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort, cmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	kubeSvc := ServiceSubnet.Addr().Next()
	certs := []struct {
		name, cn, org string
		server        bool
		dns           []string
		ips           []net.IP
	}{
		{"apiserver", "kube-apiserver", "", true,
			[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + ClusterDomain},
			[]net.IP{net.IPv4(127, 0, 0, 1), net.IP(kubeSvc.AsSlice()), net.IP(c.NodeIP.AsSlice())}},
		{"admin", "admin", "system:masters", false, nil, nil},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters", false, nil, nil},
		{"kubelet", "system:node:" + NodeName, "system:nodes", false, nil, nil},
		{"kubelet-serving", "system:node:" + NodeName, "system:nodes", true, []string{NodeName, "localhost"},
			[]net.IP{net.IPv4(127, 0, 0, 1), net.IP(c.NodeIP.AsSlice())}},
		{"controller-manager", "system:kube-controller-manager", "", false, nil, nil},
		{"scheduler", "system:kube-scheduler", "", false, nil, nil},
		{"kube-proxy", "system:kube-proxy", "", false, nil, nil},
	}
	for _, ct := range certs {
		if err := p.cert(ct.name, ct.cn, ct.org, ct.server, ct.dns, ct.ips); err != nil {
			return err
		}
	}
	c.server = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	kc := map[string]string{}
	for _, n := range []string{"admin", "kubelet", "controller-manager", "scheduler", "kube-proxy"} {
		if kc[n], err = p.kubeconfig(n, c.server); err != nil {
			return err
		}
	}
	c.Kubeconfig = kc["admin"]

	etcd, err := c.startComponent("etcd", c.Bin.Etcd, "--name=tp", "--data-dir="+filepath.Join(c.dir, "etcd"),
		fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", etcdClient),
		fmt.Sprintf("--advertise-client-urls=http://127.0.0.1:%d", etcdClient),
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", etcdPeer),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", etcdPeer),
		fmt.Sprintf("--initial-cluster=tp=http://127.0.0.1:%d", etcdPeer),
		"--listen-metrics-urls=", "--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	_ = etcd
	if err := c.waitFor("etcd to listen", 30*time.Second, func() error {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", etcdClient), time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	}); err != nil {
		return err
	}
	if _, err := c.startComponent("apiserver", filepath.Join(c.Bin.Kube, "kube-apiserver"),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdClient),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiPort),
		"--advertise-address="+c.NodeIP.String(),
		"--tls-cert-file="+p.path("apiserver.crt"), "--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc."+ClusterDomain,
		"--service-account-key-file="+p.path("sa.pub"), "--service-account-signing-key-file="+p.path("sa.key"),
		"--service-cluster-ip-range="+ServiceSubnet.String(),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--kubelet-client-certificate="+p.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p.path("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
	); err != nil {
		return err
	}
	if c.REST, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return fmt.Errorf("load the admin kubeconfig: %w", err)
	}
	c.REST.QPS, c.REST.Burst = 50, 100
	if c.Client, err = kubernetes.NewForConfig(c.REST); err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	if err := c.waitFor("kube-apiserver to be ready", 90*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}
	if _, err := c.startComponent("controller-manager", filepath.Join(c.Bin.Kube, "kube-controller-manager"),
		"--kubeconfig="+kc["controller-manager"], "--authentication-kubeconfig="+kc["controller-manager"],
		"--authorization-kubeconfig="+kc["controller-manager"],
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", cmPort), "--leader-elect=false",
		"--service-account-private-key-file="+p.path("sa.key"), "--root-ca-file="+p.path("ca.crt"),
		"--use-service-account-credentials=true", "--controllers=*,-bootstrapsigner,-tokencleaner",
		"--concurrent-gc-syncs=5",
	); err != nil {
		return err
	}
	if _, err := c.startComponent("scheduler", filepath.Join(c.Bin.Kube, "kube-scheduler"),
		"--kubeconfig="+kc["scheduler"], "--authentication-kubeconfig="+kc["scheduler"],
		"--authorization-kubeconfig="+kc["scheduler"],
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", schedPort), "--leader-elect=false",
	); err != nil {
		return err
	}
	return nil
}

// startNode prepares the network (bridge, CNI), the registry and the
// images, and CoreDNS, then starts kubelet and kube-proxy and waits for a
// Ready node.
func (c *Cluster) startNode() error {
	ports, err := c.ports(3)
	if err != nil {
		return err
	}
	kubeletPort, proxyHealth, proxyMetrics := ports[0], ports[1], ports[2]
	if err := setupNetwork(c.dir, c.Bin.CNI); err != nil {
		return err
	}
	if c.Registry, err = c.startRegistry(); err != nil {
		return err
	}
	if err := c.importImages(); err != nil {
		return err
	}
	if err := c.startCoreDNS(context.Background()); err != nil {
		return err
	}
	kubeletConf := filepath.Join(c.dir, "kubelet-config.yaml")
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
tlsCertFile: %q
tlsPrivateKeyFile: %q
podLogsDir: %q
resolvConf: /etc/resolv.conf
clusterDomain: %s
clusterDNS: [%s]
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
serializeImagePulls: false
registerNode: true
syncFrequency: 10s
fileCheckFrequency: 10s
shutdownGracePeriod: 0s
`, c.NodeIP, kubeletPort, c.pki.path("ca.crt"), ContainerdSocket, c.pki.path("kubelet-serving.crt"),
		c.pki.path("kubelet-serving.key"), filepath.Join(c.dir, "kubelet", "pod-logs"), ClusterDomain, DNSAddr)
	if err := os.WriteFile(kubeletConf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write kubelet config: %w", err)
	}
	if _, err := c.startComponent("kubelet", filepath.Join(c.Bin.Kube, "kubelet"),
		"--config="+kubeletConf, "--kubeconfig="+c.pki.path("kubelet.kubeconfig"),
		"--root-dir="+filepath.Join(c.dir, "kubelet"), "--hostname-override="+NodeName,
		"--node-ip="+c.NodeIP.String(),
	); err != nil {
		return err
	}
	if _, err := c.startComponent("kube-proxy", filepath.Join(c.Bin.Kube, "kube-proxy"),
		"--kubeconfig="+c.pki.path("kube-proxy.kubeconfig"), "--hostname-override="+NodeName,
		"--proxy-mode=iptables", "--cluster-cidr="+PodSubnet.String(),
		fmt.Sprintf("--healthz-bind-address=127.0.0.1:%d", proxyHealth),
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", proxyMetrics),
		"--conntrack-max-per-core=0", "--conntrack-min=0",
		"--conntrack-tcp-timeout-established=0s", "--conntrack-tcp-timeout-close-wait=0s",
		"--nodeport-addresses="+c.NodeIP.String()+"/32",
	); err != nil {
		return err
	}
	bg := context.Background()
	if err := c.waitFor("node "+NodeName+" to be Ready", 120*time.Second, func() error {
		n, err := c.Client.CoreV1().Nodes().Get(bg, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node not ready: %s", cond.Message)
			}
		}
		return errNotYet
	}); err != nil {
		return err
	}
	return c.waitFor("the default service account", 60*time.Second, func() error {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(bg, "default", metav1.GetOptions{})
		return err
	})
}

// Dir is the cluster's run dir (logs/ holds each component's log).
func (c *Cluster) Dir() string { return c.dir }

// Logs returns the end of a component's log ("kubelet", "apiserver", ...).
func (c *Cluster) Logs(name string, lines int) string {
	return tailFile(filepath.Join(c.dir, "logs", name+".log"), lines)
}

// Stop deletes every pod, stops every component and undoes every change
// to the machine; it is safe to call on a half-started cluster.
func (c *Cluster) Stop() {
	if c == nil {
		return
	}
	start := time.Now()
	if c.Client != nil && len(c.components) > 0 {
		c.deleteWorkloads()
	}
	// CoreDNS's watch ends before the API server does.
	stopOrder := []string{"scheduler", "controller-manager", "kube-proxy", "kubelet", "coredns", "registry"}
	for _, name := range stopOrder {
		for _, p := range c.components {
			if p.name == name {
				p.stop(10 * time.Second)
			}
		}
	}
	removeSandboxes(c.log)
	for _, p := range c.components {
		p.stop(10 * time.Second)
	}
	teardown(c.dir, c.log)
	if c.lock != nil {
		c.lock.Close()
	}
	fmt.Fprintf(c.log, "k8s harness: cluster stopped and removed in %s\n", time.Since(start).Round(100*time.Millisecond))
}

// deleteWorkloads deletes the pods of every namespace but kube-system's
// and waits (a little) for them to go, so that kubelet stops their
// containers and CNI releases their addresses in order.
func (c *Cluster) deleteWorkloads() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nss, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	zero := int64(0)
	for _, ns := range nss.Items {
		c.Client.CoreV1().Pods(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	}
	for ctx.Err() == nil {
		pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) == 0 {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// WriteFile is a helper for tests: it writes name under the run dir.
func (c *Cluster) WriteFile(name string, data []byte) (string, error) {
	p := filepath.Join(c.dir, name)
	return p, os.WriteFile(p, data, 0o644)
}

func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
		return n
	}
	return def
}
