package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// dnsmasqBinary is Debian's dnsmasq-base.
const dnsmasqBinary = "/usr/sbin/dnsmasq"

// dnsReadyTimeout bounds how long dnsmasq may take to listen after a (re)start.
const dnsReadyTimeout = 10 * time.Second

// dnsServer runs dnsmasq in the DNS pod. Its records live in a config
// file; dnsmasq reads that only at start, so a change restarts it (AddPod,
// AddHost, AddService, AddSRV, AddTXT), and a query sent during those few
// milliseconds goes unanswered: add records before clients start asking.
type dnsServer struct {
	c      *Cluster
	pod    *Pod
	binary string
	conf   string
	t      TB // the test that owns the cluster: dnsmasq logs there

	mu      sync.Mutex
	records []string // config lines: host-record=, srv-host=, txt-record=
	proc    *Process
}

func newDNSServer(c *Cluster, pod *Pod, binary string) *dnsServer {
	return &dnsServer{c: c, pod: pod, binary: binary, conf: filepath.Join(c.dir, "dnsmasq.conf")}
}

// add appends a record line and restarts dnsmasq so it answers it.
func (d *dnsServer) add(t TB, line string) {
	t.Helper()
	d.mu.Lock()
	d.records = append(d.records, line)
	d.mu.Unlock()
	if err := d.restart(t); err != nil {
		t.Fatalf("cluster %s: %v", d.c.prefix, err)
	}
}

// restart writes the config and (re)starts dnsmasq, returning once it
// accepts connections on port 53.
func (d *dnsServer) restart(t TB) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.t == nil {
		d.t = t
	}
	conf := "# written by test/cluster for " + d.c.prefix + "\n" +
		// Nothing is forwarded (no upstream exists here) and every name it
		// does not know is NXDOMAIN, so search-domain walks end at once and
		// a lookup of an unknown name fails as "no such host", not as a
		// server failure.
		"local=/#/\n" +
		strings.Join(d.records, "\n") + "\n"
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", d.conf, err)
	}
	if d.proc != nil {
		if err := d.proc.stop(); err != nil {
			return fmt.Errorf("restart dnsmasq: %w", err)
		}
	}
	argv := []string{d.binary,
		"--keep-in-foreground", "--no-resolv", "--no-hosts",
		"--conf-file=" + d.conf,
		"--pid-file=" + filepath.Join(d.c.dir, "dnsmasq.pid"),
		"--log-facility=-", "--log-queries",
		// Stay root: a change of user would clear the parent-death signal,
		// and dnsmasq would outlive a crashed test binary.
		"--user=root",
	}
	proc, err := d.pod.start(d.t, argv, nil)
	if err != nil {
		return fmt.Errorf("start dnsmasq: %w", err)
	}
	d.proc = proc
	return d.waitReady()
}

func (d *dnsServer) waitReady() error {
	addr := netip.AddrPortFrom(d.pod.ip4, 53).String()
	deadline := time.Now().Add(dnsReadyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := d.pod.DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-d.proc.Done():
			return fmt.Errorf("dnsmasq exited (%v) before it listened on %s:\n%s", exitText(d.proc.Err()), addr, d.proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dnsmasq does not listen on %s after %s: %v", addr, dnsReadyTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// AddHost makes name answer A and AAAA queries with addrs (in addition to
// any it had). name is a full name ("app-db.default.svc.cluster.local", or
// any other domain a test wants the cluster DNS to know).
func (c *Cluster) AddHost(t TB, name string, addrs ...netip.Addr) {
	t.Helper()
	name, err := validDNSName("name", name)
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("AddHost %q: no address given: want at least one IPv4 or IPv6 address", name)
	}
	if err != nil {
		t.Fatalf("cluster %s: %v", c.prefix, err)
	}
	lines := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if !a.IsValid() {
			t.Fatalf("cluster %s: AddHost %q: address %v is not valid", c.prefix, name, a)
		}
		lines = append(lines, hostRecord(name, a.Unmap()))
	}
	c.dns.add(t, strings.Join(lines, "\n"))
}

// AddService makes NAME.default.svc.cluster.local (and so the short name
// NAME, through the pods' search domains) answer with pod's IPv4 address:
// a second service in front of an existing pod.
func (c *Cluster) AddService(t TB, name string, pod *Pod) {
	t.Helper()
	if !labelRE.MatchString(name) {
		t.Fatalf("cluster %s: service name %q is not valid: want a DNS label (lower-case letters, digits and '-')", c.prefix, name)
	}
	c.dns.add(t, hostRecord(name+"."+ServiceDomain, pod.ip4))
}

// AddSRV adds an SRV record: name (e.g. "_http._tcp.uwu-service.default.svc.cluster.local")
// points at target:port with the given priority and weight.
func (c *Cluster) AddSRV(t TB, name, target string, port, priority, weight uint16) {
	t.Helper()
	name, err := validDNSName("SRV name", name)
	if err != nil {
		t.Fatalf("cluster %s: %v", c.prefix, err)
	}
	target, err = validDNSName("SRV target", target)
	if err != nil {
		t.Fatalf("cluster %s: %v", c.prefix, err)
	}
	c.dns.add(t, fmt.Sprintf("srv-host=%s,%s,%d,%d,%d", name, target, port, priority, weight))
}

// AddTXT adds a TXT record with one or more strings (each at most 255
// bytes of printable text without '"' or '\').
func (c *Cluster) AddTXT(t TB, name string, texts ...string) {
	t.Helper()
	name, err := validDNSName("TXT name", name)
	if err != nil {
		t.Fatalf("cluster %s: %v", c.prefix, err)
	}
	if len(texts) == 0 {
		t.Fatalf("cluster %s: AddTXT %q: no text given: want at least one string", c.prefix, name)
	}
	quoted := make([]string, len(texts))
	for i, s := range texts {
		if err := validTXT(s); err != nil {
			t.Fatalf("cluster %s: AddTXT %q: text %d %q: %v", c.prefix, name, i, s, err)
		}
		quoted[i] = strconv.Quote(s)
	}
	c.dns.add(t, "txt-record="+name+","+strings.Join(quoted, ","))
}

func hostRecord(name string, addr netip.Addr) string {
	return fmt.Sprintf("host-record=%s,%s", name, addr)
}

var dnsLabelRE = regexp.MustCompile(`^[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?$`)

// validDNSName checks a name for a record and drops one trailing dot.
func validDNSName(field, name string) (string, error) {
	n := strings.TrimSuffix(name, ".")
	if n == "" || len(n) > 253 {
		return "", fmt.Errorf("%s %q is not valid: want a DNS name of 1 to 253 characters", field, name)
	}
	for _, label := range strings.Split(n, ".") {
		if !dnsLabelRE.MatchString(label) {
			return "", fmt.Errorf("%s %q is not valid: label %q must be 1-63 letters, digits, '-' or '_' (not starting or ending with '-')", field, name, label)
		}
	}
	return n, nil
}

func validTXT(s string) error {
	if len(s) > 255 {
		return fmt.Errorf("is %d bytes: at most 255 fit in one TXT string", len(s))
	}
	for _, r := range s {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return fmt.Errorf("character %q cannot be passed to dnsmasq: use printable ASCII without '\"' or '\\'", r)
		}
	}
	return nil
}
