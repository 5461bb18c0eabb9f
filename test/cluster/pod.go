package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/trafficpolice/trafficpolice/netns"
)

// Pod is one namespace in the cluster, with its own address, resolv.conf
// and hosts file, like a Kubernetes pod's network sandbox.
type Pod struct {
	c       *Cluster
	name    string
	nsName  string
	ip4     netip.Addr
	ip6     netip.Addr
	resolv  string
	hosts   string
	network *netns.Namespace // nil until created; then removed with the cluster
}

// Name is the pod's name, also its hostname and its service's short name.
func (p *Pod) Name() string { return p.name }

// Namespace is the name of the pod's network namespace, as "ip netns"
// knows it ("tpc-<id>-<name>").
func (p *Pod) Namespace() string { return p.nsName }

// NamespacePath is the file that holds the pod's network namespace
// (see netns.Namespace.Path), for setns or nsenter --net=PATH.
func (p *Pod) NamespacePath() string { return p.network.Path() }

// IP is the pod's IPv4 address.
func (p *Pod) IP() netip.Addr { return p.ip4 }

// IPv6 is the pod's IPv6 (ULA) address.
func (p *Pod) IPv6() netip.Addr { return p.ip6 }

// FQDN is the pod's service name: NAME.default.svc.cluster.local.
func (p *Pod) FQDN() string { return p.name + "." + ServiceDomain }

// ResolvConf is the path of the pod's resolv.conf: the cluster DNS,
// Kubernetes' search domains and ndots:5. Processes started with Start or
// Run see it as /etc/resolv.conf.
func (p *Pod) ResolvConf() string { return p.resolv }

// Hosts is the path of the pod's hosts file (localhost and the pod's own
// name). Processes started with Start or Run see it as /etc/hosts.
func (p *Pod) Hosts() string { return p.hosts }

// Cluster is the cluster the pod belongs to.
func (p *Pod) Cluster() *Cluster { return p.c }

func (p *Pod) writeFiles(dir string) error {
	p.resolv = filepath.Join(dir, p.name+".resolv.conf")
	p.hosts = filepath.Join(dir, p.name+".hosts")
	resolv := fmt.Sprintf("nameserver %s\nsearch %s svc.cluster.local cluster.local\noptions ndots:5\n",
		ip4For(dnsHostNum), ServiceDomain)
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n%s\t%s\n",
		p.ip4, p.name, p.ip6, p.name)
	if err := os.WriteFile(p.resolv, []byte(resolv), 0o644); err != nil {
		return fmt.Errorf("write resolv.conf of pod %s: %w", p.name, err)
	}
	if err := os.WriteFile(p.hosts, []byte(hosts), 0o644); err != nil {
		return fmt.Errorf("write hosts of pod %s: %w", p.name, err)
	}
	return nil
}

// DialContext opens a connection from inside the pod's network namespace,
// as a process in the pod would. addr must be IP:port (a literal address:
// name lookups would run on other threads, outside the pod).
func (p *Pod) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("dial from pod %s: address %q is not valid: want IP:port (no names): %w", p.name, addr, err)
	}
	var conn net.Conn
	err := p.network.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from pod %s: %w", network, addr, p.name, err)
	}
	return conn, nil
}

// HTTPClient returns a client whose connections start inside the pod, for
// URLs with a literal IP (http://10.244.0.12:8080/...).
func (p *Pod) HTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       p.DialContext,
			DisableKeepAlives: true,
		},
		Timeout: time.Minute,
	}
}

// WaitPort waits until something in the pod accepts TCP connections on
// port (on the pod's address or its loopback), failing the test after timeout.
func (p *Pod) WaitPort(t TB, port int, timeout time.Duration) {
	t.Helper()
	addrs := []string{
		netip.AddrPortFrom(p.ip4, uint16(port)).String(),
		"127.0.0.1:" + strconv.Itoa(port),
	}
	deadline := time.Now().Add(timeout)
	var errs []string
	for {
		errs = errs[:0]
		for _, a := range addrs {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn, err := p.DialContext(ctx, "tcp", a)
			cancel()
			if err == nil {
				conn.Close()
				return
			}
			errs = append(errs, err.Error())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: nothing listens on port %d after %s: %s", p.name, port, timeout, strings.Join(errs, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
