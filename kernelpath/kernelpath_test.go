package kernelpath_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	mdnetlink "github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netlink"

	"github.com/trafficpolice/trafficpolice/kernelpath"
	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

// world is a sandbox (a real TUN as its default route, nobody reading it:
// the router's side) and a server namespace the host routes to.
type world struct {
	sandbox, srv  *netns.Namespace
	tun           *os.File
	hostIP, srvIP netip.Addr
	hostLink      string
	id            string
}

func newWorld(t *testing.T, hostForwards bool) *world {
	netnstest.RequireRoot(t)
	w := &world{id: netnstest.Suffix(t)}
	w.sandbox = netnstest.Namespace(t, "tpt-kps")
	tun, err := netns.SetupSandbox(w.sandbox, netns.SandboxLink{NoIPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	w.tun = tun
	w.srv = netnstest.Namespace(t, "tpt-kpv")
	netnstest.LoopbackUp(t, w.srv)
	b := []byte(w.id)
	base := netip.AddrFrom4([4]byte{10, 214, byte(int(b[0])%200 + 20), byte(int(b[1]) % 31 * 8)})
	w.hostIP, w.srvIP = base.Next(), base.Next().Next()
	pair := netnstest.Veth(t, nil, w.srv, []netip.Prefix{netip.PrefixFrom(w.hostIP, 29)}, []netip.Prefix{netip.PrefixFrom(w.srvIP, 29)})
	w.hostLink = pair.A
	fw := "0"
	if hostForwards {
		fw = "1"
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+pair.A+"/forwarding", []byte(fw), 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) setup(t *testing.T, r policy.Rules) *kernelpath.Path {
	t.Helper()
	return w.setupTracked(t, r, false)
}

func (w *world) setupTracked(t *testing.T, r policy.Rules, track bool) *kernelpath.Path {
	t.Helper()
	pol, err := policy.New(r)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kernelpath.Setup(kernelpath.Config{Namespace: w.sandbox, ID: w.id, Steps: pol.Steps(), Track: track})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// serve accepts connections on the server's port, each handled by handle
// on a goroutine of its own.
func (w *world) serve(t *testing.T, port int, handle func(net.Conn)) {
	ln := netnstest.Listen(t, w.srv, "tcp4", fmt.Sprintf("%s:%d", w.srvIP, port))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
}

// serveTCP answers each connection with the address it came from.
func (w *world) serveTCP(t *testing.T, port int) {
	w.serve(t, port, func(c net.Conn) { fmt.Fprintf(c, "%s\n", c.RemoteAddr()) })
}

// dial connects from inside the sandbox and returns the first line the
// server says.
func (w *world) dial(port int, timeout time.Duration) (net.Conn, string, error) {
	var c net.Conn
	err := w.sandbox.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", w.srvIP, port), timeout)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 128)
	n, err := c.Read(buf)
	return c, strings.TrimSpace(string(buf[:n])), err
}

// connect opens a TCP connection from inside the sandbox to the server's
// port, closed when the test ends.
func (w *world) connect(t *testing.T, port int) net.Conn {
	t.Helper()
	var c net.Conn
	if err := w.sandbox.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", w.srvIP, port), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sawSYN reads the TUN until it carries a TCP SYN to dst:port: the flow
// went the router's way.
func (w *world) sawSYN(t *testing.T, port int) bool {
	t.Helper()
	return w.sawSYNTo(t, w.srvIP, port)
}

func (w *world) sawSYNTo(t *testing.T, to netip.Addr, port int) bool {
	t.Helper()
	w.tun.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 65536)
	dst := to.As4()
	for {
		n, err := w.tun.Read(buf)
		if err != nil {
			return false
		}
		p := buf[:n]
		if n < 40 || p[0]>>4 != 4 || p[9] != 6 {
			continue
		}
		ihl := int(p[0]&0xf) * 4
		if [4]byte(p[16:20]) == dst && int(p[ihl+2])<<8|int(p[ihl+3]) == port && p[ihl+13]&0x02 != 0 {
			return true
		}
	}
}

func TestLocalRulesTakeTheKernelAndTheRestTheRouter(t *testing.T) {
	w := newWorld(t, true)
	w.serveTCP(t, 7001)
	w.serveTCP(t, 7002)
	w.serveEcho(t, 7005)
	p := w.setup(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true,
		Local: []string{fmt.Sprintf("tcp://%s:7001", w.srvIP), "db.example", fmt.Sprintf("tcp://%s:7005", w.srvIP)}})

	c, from, err := w.dial(7001, 5*time.Second)
	if err != nil {
		t.Fatalf("a local rule's flow over the kernel path: %v", err)
	}
	defer c.Close()
	// The host masquerades: the server sees the host's address.
	if !strings.HasPrefix(from, w.hostIP.String()+":") {
		t.Errorf("the server saw the flow from %q, want the host's %s", from, w.hostIP)
	}

	if _, _, err := w.dial(7002, 300*time.Millisecond); err == nil {
		t.Errorf("port 7002 is not in the local filter (remote by default) but was answered by the server")
	}
	if !w.sawSYN(t, 7002) {
		t.Errorf("the remote flow to port 7002 never reached the TUN (the router)")
	}

	echo := w.connect(t, 7005)
	exchange(t, echo, "before")

	// Once the sandbox's DNS has answered with the address, the router
	// decides (it knows the names; db.example may be one).
	if err := p.Named(w.srvIP, false, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A connection that started on the kernel path stays on it.
	exchange(t, echo, "after the address got a name")
	if _, _, err := w.dial(7001, 300*time.Millisecond); err == nil {
		t.Errorf("a named address still took the kernel path")
	}
	if !w.sawSYN(t, 7001) {
		t.Errorf("the flow to a named address never reached the TUN")
	}
}

// serveEcho echoes every connection's bytes.
func (w *world) serveEcho(t *testing.T, port int) {
	w.serve(t, port, func(c net.Conn) { io.Copy(c, c) })
}

func exchange(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, buf, err)
	}
}

func TestUDPTakesTheKernelPath(t *testing.T) {
	w := newWorld(t, true)
	var pc net.PacketConn
	if err := w.srv.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", w.srvIP.String()+":7003")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	w.setup(t, policy.Rules{TCP: true, UDP: true}) // no agent: everything local
	var got string
	err := w.sandbox.Do(func() error {
		c, err := net.Dial("udp4", w.srvIP.String()+":7003")
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		got = string(buf[:n])
		return err
	})
	if err != nil || got != "ping" {
		t.Fatalf("UDP echo over the kernel path: %q, %v", got, err)
	}
}

// A destination whose host interface does not forward would lose its
// replies: the router takes it, whatever the rules say.
func TestDestinationsTheHostDoesNotForwardGoToTheRouter(t *testing.T) {
	w := newWorld(t, false)
	w.serveTCP(t, 7004)
	w.setup(t, policy.Rules{TCP: true, UDP: true})
	if _, _, err := w.dial(7004, 300*time.Millisecond); err == nil {
		t.Errorf("the flow took the kernel path through a link that does not forward")
	}
	if !w.sawSYN(t, 7004) {
		t.Errorf("the flow never reached the TUN (the router)")
	}
}

func TestCloseAndRemoveLeftoversLeaveTheHostClean(t *testing.T) {
	for _, killed := range []bool{false, true} {
		t.Run(fmt.Sprintf("killed=%v", killed), func(t *testing.T) {
			w := newWorld(t, true)
			p := w.setup(t, policy.Rules{TCP: true, UDP: true})
			if err := hostLeftovers(w.id); err == nil {
				t.Fatalf("after Setup nothing of run %s is on the host: the check cannot fail", w.id)
			}
			if killed {
				// What a later run does for one that was killed.
				if err := kernelpath.RemoveLeftovers(w.id); err != nil {
					t.Fatal(err)
				}
			} else if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if err := hostLeftovers(w.id); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func hostLeftovers(id string) error {
	var errs []error
	if _, err := netlink.LinkByName(kernelpath.HostLinkPrefix + id); err == nil {
		errs = append(errs, fmt.Errorf("link %s%s is left", kernelpath.HostLinkPrefix, id))
	}
	for _, table := range []string{"nat", "filter"} {
		out, err := exec.CommandContext(context.Background(), "iptables", "-t", table, "-S").CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("iptables -t %s -S: %v: %s", table, err, out))
		}
		if strings.Contains(string(out), id) {
			errs = append(errs, fmt.Errorf("iptables -t %s has rules of run %s:\n%s", table, id, out))
		}
	}
	return errors.Join(errs...)
}

// A name whose rules send every flow local takes the kernel path, port by
// port as the rules say, until the name expires; then the router decides.
func TestANamedAddressAllLocalTakesTheKernelUntilItsNamesExpire(t *testing.T) {
	w := newWorld(t, true)
	w.serveTCP(t, 7002)
	p := w.setup(t, policy.Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{"db.example"}})
	if _, _, err := w.dial(7002, 300*time.Millisecond); err == nil || !w.sawSYN(t, 7002) {
		t.Fatalf("an unnamed address with a remote default took the kernel path (%v)", err)
	}
	if err := p.Named(w.srvIP, true, time.Now().Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Another name for the same address, the same path: the kernel's route
	// is not written again (a DNS answer calls Named each time an
	// address gains a name).
	writes := p.NamedRouteWrites()
	if err := p.Named(w.srvIP, true, time.Now().Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if again := p.NamedRouteWrites(); again != writes {
		t.Errorf("the same decision wrote the route again (%d writes, then %d)", writes, again)
	}
	c, from, err := w.dial(7002, 5*time.Second)
	if err != nil {
		t.Fatalf("a named address whose flows all go local did not take the kernel path: %v", err)
	}
	c.Close()
	if !strings.HasPrefix(from, w.hostIP.String()+":") {
		t.Errorf("the server saw %q, want the host's %s", from, w.hostIP)
	}
	// Once the name expires, new flows go to the router.
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, _, err := w.dial(7002, 300*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the address still takes the kernel path 15 s after its name expired")
		}
		time.Sleep(100 * time.Millisecond) // polling for the expiry, not synchronising
	}
	if !w.sawSYN(t, 7002) {
		t.Errorf("after the expiry the flow never reached the TUN")
	}
}

// A flow to one of the host's own addresses stays with the router, which
// dials it from the host: delivered locally it would reach the server with
// the veth's address instead of the host's.
func TestTheHostsOwnAddressesStayWithTheRouter(t *testing.T) {
	w := newWorld(t, true)
	ln, err := net.Listen("tcp4", w.hostIP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	w.setup(t, policy.Rules{TCP: true, UDP: true})
	err = w.sandbox.Do(func() error {
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", w.hostIP, port), 300*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Errorf("a flow to the host's own %s took the kernel path", w.hostIP)
	}
	if !w.sawSYNTo(t, w.hostIP, port) {
		t.Errorf("the flow to the host's own address never reached the TUN")
	}
}

// A flow log needs every flow: the kernel path's come from the sandbox's
// conntrack, ended ones as they end and open ones when the watch stops.
func TestWatchFlowsReportsEndedAndOpenFlows(t *testing.T) {
	w := newWorld(t, true)
	w.serveTCP(t, 7001)
	w.serveEcho(t, 7005)
	p := w.setupTracked(t, policy.Rules{TCP: true, UDP: true}, true)
	var mu sync.Mutex
	var flows []kernelpath.Flow
	stop, err := p.WatchFlows(func(f kernelpath.Flow) {
		mu.Lock()
		flows = append(flows, f)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := w.dial(7001, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Its end: the entry leaves the table (as at the end of TIME_WAIT).
	endFlows(t, w.sandbox, w.srvIP, 7001)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(flows)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ended flow was not reported within 10 s (%d flows)", n)
		}
		time.Sleep(20 * time.Millisecond) // polling for the event
	}
	open := w.connect(t, 7005)
	exchange(t, open, "still open at the end")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	byPort := map[uint16]kernelpath.Flow{}
	for _, f := range flows {
		if f.Dst.Addr() != w.srvIP || f.Proto != policy.TCP || f.Src.Addr() != p.SandboxAddr() {
			t.Errorf("unexpected flow %+v", f)
		}
		if _, dup := byPort[f.Dst.Port()]; dup {
			t.Errorf("flow to port %d reported twice", f.Dst.Port())
		}
		byPort[f.Dst.Port()] = f
	}
	for _, port := range []uint16{7001, 7005} {
		f, ok := byPort[port]
		if !ok {
			t.Errorf("no flow to port %d in %+v", port, flows)
			continue
		}
		if f.BytesOut == 0 || f.BytesIn == 0 || f.Start.IsZero() || f.End.Before(f.Start) {
			t.Errorf("flow to port %d: %+v: want bytes both ways and start <= end", port, f)
		}
	}
}

// endFlows deletes the sandbox's conntrack entries to dst:port, which is
// what the kernel does when they time out.
func endFlows(t *testing.T, ns *netns.Namespace, dst netip.Addr, port uint16) {
	t.Helper()
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := conntrack.Dial(&mdnetlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, fl := range flows {
		if fl.TupleOrig.IP.DestinationAddress == dst && fl.TupleOrig.Proto.DestinationPort == port {
			if err := c.Delete(fl); err != nil {
				t.Fatal(err)
			}
		}
	}
}
