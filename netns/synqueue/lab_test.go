package synqueue

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// The lab's addresses: the app's own on the TUN, and a destination the
// routes send to the TUN, where nothing answers.
var (
	labAddr4 = netip.MustParsePrefix("198.51.100.2/24")
	labAddr6 = netip.MustParsePrefix("2001:db8:5::2/64")
	farDst4  = netip.MustParseAddrPort("198.51.100.9:80")
	farDst6  = netip.MustParseAddrPort("[2001:db8:5::9]:443")
)

// waitLimit bounds every wait of these tests for something that must
// happen; nothing is timed.
const waitLimit = 15 * time.Second

// lab is a namespace of its own with lo up and a TUN no process reads
// (made with `ip tuntap`, as the router's TUN stands when the router does
// not answer), the lab's addresses on it and default routes through it.
type lab struct {
	ns    *netns.Namespace
	link  string
	runID string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	netnstest.RequireRoot(t)
	netnstest.RequireCommand(t, "ip", "iproute2")
	for _, c := range []string{"iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save"} {
		netnstest.RequireCommand(t, c, "iptables")
	}
	ns := netnstest.Namespace(t, "tpsq")
	netnstest.LoopbackUp(t, ns)
	sfx := netnstest.Suffix(t)
	l := &lab{ns: ns, link: "tpq" + sfx, runID: "t" + sfx}
	l.ip(t, "tuntap", "add", "dev", l.link, "mode", "tun")
	t.Cleanup(func() {
		// The namespace takes the TUN with it; delete it first anyway and
		// check that nothing of it reached the host.
		exec.Command("ip", "-n", ns.Name(), "link", "del", l.link).Run()
		if err := exec.Command("ip", "link", "show", l.link).Run(); err == nil {
			t.Errorf("TUN %s is on the host", l.link)
		}
	})
	l.ip(t, "addr", "add", labAddr4.String(), "dev", l.link)
	l.ip(t, "-6", "addr", "add", labAddr6.String(), "dev", l.link, "nodad")
	l.ip(t, "link", "set", l.link, "up")
	l.ip(t, "route", "add", "default", "dev", l.link)
	l.ip(t, "-6", "route", "add", "default", "dev", l.link)
	return l
}

func (l *lab) ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", l.ns.Name()}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s in %s: %v: %s", strings.Join(args, " "), l.ns.Name(), err, out)
	}
}

// ifindex is the lab TUN's interface index.
func (l *lab) ifindex(t *testing.T) uint32 {
	t.Helper()
	var idx int
	err := l.ns.Do(func() error {
		ifi, err := net.InterfaceByName(l.link)
		if err == nil {
			idx = ifi.Index
		}
		return err
	})
	if err != nil {
		t.Fatalf("the TUN's index: %v", err)
	}
	return uint32(idx)
}

// install installs the lab's rules for queue num, taking to takePort,
// removed when the test ends; the cleanup checks that none is left.
func (l *lab) install(t *testing.T, num uint16, takePort uint16) Rules {
	t.Helper()
	r := Rules{RunID: l.runID, Link: l.link, Queue: num, TakePort: takePort, Marks: DefaultMarks}
	if err := r.Install(l.ns); err != nil {
		netnstest.Need(t, false, "install the SYN queue's rules: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Remove(l.ns); err != nil {
			t.Errorf("remove rules: %v", err)
		}
		if n := l.tagged(t); n != 0 {
			t.Errorf("%d rules tagged %s%s are left", n, TagPrefix, l.runID)
		}
	})
	return r
}

// tagged counts the rules of both families carrying the lab's tag.
func (l *lab) tagged(t *testing.T) int {
	t.Helper()
	n := 0
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command("ip", "netns", "exec", l.ns.Name(), save).CombinedOutput()
		if err != nil {
			t.Errorf("%s in %s: %v: %s", save, l.ns.Name(), err, out)
			continue
		}
		n += strings.Count(string(out), TagPrefix+l.runID)
	}
	return n
}

// open binds queue num in the lab and runs it; its SYNs come out of the
// returned channel. The queue is closed when the test ends.
func (l *lab) open(t *testing.T, num uint16, maxLen uint32) (*Queue, <-chan SYN) {
	t.Helper()
	q, err := Open(l.ns, Config{Num: num, MaxLen: maxLen})
	if err != nil {
		netnstest.Need(t, false, "open the SYN queue: %v", err)
	}
	return l.run(t, q)
}

// openFromFile is open with the queue passed on as a rootless run's
// holder does: File, the opener's copy closed, FromFile.
func (l *lab) openFromFile(t *testing.T, num uint16) (*Queue, <-chan SYN) {
	t.Helper()
	opened, err := Open(l.ns, Config{Num: num})
	if err != nil {
		netnstest.Need(t, false, "open the SYN queue: %v", err)
	}
	f, err := opened.File()
	if err != nil {
		t.Fatal(err)
	}
	if err := opened.Close(); err != nil {
		t.Fatal(err)
	}
	q, err := FromFile(f, num, l.ns.String())
	if err != nil {
		t.Fatal(err)
	}
	return l.run(t, q)
}

// run runs q's receive loop until the test ends, handing its SYNs over.
func (l *lab) run(t *testing.T, q *Queue) (*Queue, <-chan SYN) {
	syns := make(chan SYN, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx, func(s SYN) { syns <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := q.Close(); err != nil {
			t.Errorf("close queue: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return after its context ended")
		}
	})
	return q, syns
}

// listen opens the router's listener on 127.0.0.1 and [::1], one port.
func (l *lab) listen(t *testing.T) (v4, v6 *net.TCPListener, port uint16) {
	t.Helper()
	v4 = netnstest.Listen(t, l.ns, "tcp4", "127.0.0.1:0").(*net.TCPListener)
	port = uint16(v4.Addr().(*net.TCPAddr).Port)
	v6 = netnstest.Listen(t, l.ns, "tcp6", netip.AddrPortFrom(netip.IPv6Loopback(), port).String()).(*net.TCPListener)
	return v4, v6, port
}

// dialResult is how an app's connect() ended.
type dialResult struct {
	conn net.Conn
	err  error
}

// dial connects from the lab's address and port srcPort to dst, inside
// the lab, as an app would, ending with timeout at the latest; the result
// comes out of the channel.
func (l *lab) dial(t *testing.T, dst netip.AddrPort, srcPort uint16, timeout time.Duration) (netip.AddrPort, <-chan dialResult) {
	return l.dialWith(t, dst, srcPort, timeout, nil)
}

// dialMarked is dial from a socket with SO_MARK mark.
func (l *lab) dialMarked(t *testing.T, dst netip.AddrPort, srcPort uint16, timeout time.Duration, mark uint32) (netip.AddrPort, <-chan dialResult) {
	return l.dialWith(t, dst, srcPort, timeout, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	})
}

// dialWith is dial from a socket that control (if not nil) set up.
func (l *lab) dialWith(t *testing.T, dst netip.AddrPort, srcPort uint16, timeout time.Duration, control func(fd int) error) (netip.AddrPort, <-chan dialResult) {
	t.Helper()
	src := netip.AddrPortFrom(labAddr4.Addr(), srcPort)
	if dst.Addr().Is6() {
		src = netip.AddrPortFrom(labAddr6.Addr(), srcPort)
	}
	res := make(chan dialResult, 1)
	ended := make(chan struct{})
	var conn net.Conn
	go func() {
		defer close(ended)
		var r dialResult
		r.err = l.ns.Do(func() error {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Timeout: timeout}
			if control != nil {
				d.Control = func(_, _ string, c syscall.RawConn) error {
					var serr error
					err := c.Control(func(fd uintptr) { serr = control(int(fd)) })
					return errors.Join(err, serr)
				}
			}
			var err error
			r.conn, err = d.Dial("tcp", dst.String())
			return err
		})
		conn = r.conn
		res <- r
	}()
	t.Cleanup(func() {
		select {
		case <-ended:
			if conn != nil {
				conn.Close()
			}
		case <-time.After(waitLimit):
			t.Errorf("the dial to %s did not end", dst)
		}
	})
	return src, res
}

// nextSYN waits for the queue's next SYN and checks its addresses.
func nextSYN(t *testing.T, syns <-chan SYN, src, dst netip.AddrPort) SYN {
	t.Helper()
	select {
	case s := <-syns:
		if s.Src != src || s.Dst != dst {
			t.Fatalf("queued SYN %v -> %v; want %v -> %v", s.Src, s.Dst, src, dst)
		}
		return s
	case <-time.After(waitLimit):
		t.Fatalf("no SYN %v -> %v was queued", src, dst)
	}
	return SYN{}
}

// waitDial waits for the app's connect() to end.
func waitDial(t *testing.T, res <-chan dialResult) dialResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(waitLimit):
		t.Fatal("the app's connect() did not end")
	}
	return dialResult{}
}

// tunReader attaches to the lab's TUN (it gets a reader, as when the
// router serves it) until the test ends.
func (l *lab) tunReader(t *testing.T) *os.File {
	t.Helper()
	var f *os.File
	err := l.ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(l.link)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), l.link)
		return nil
	})
	if err != nil {
		t.Fatalf("attach to TUN %s: %v", l.link, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// retransmits reads how many TCP segments the lab's kernel has
// retransmitted (TcpRetransSegs): 0 right after a SYN came out of the TUN
// says it was the first transmission, not a retransmission after a drop.
func (l *lab) retransmits(t *testing.T) int {
	t.Helper()
	var snmp []byte
	err := l.ns.Do(func() error {
		var err error
		snmp, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		t.Fatalf("read the lab's TCP counters: %v", err)
	}
	var names []string
	for _, line := range strings.Split(string(snmp), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "RetransSegs" && i < len(f) {
				n, err := strconv.Atoi(f[i])
				if err != nil {
					t.Fatalf("RetransSegs %q: %v", f[i], err)
				}
				return n
			}
		}
	}
	t.Fatalf("no Tcp RetransSegs in the lab's /proc/net/snmp")
	return 0
}

// onTUN waits until the SYN src -> dst comes out of the TUN: it went on
// its usual route.
func onTUN(t *testing.T, tun *os.File, src, dst netip.AddrPort) {
	t.Helper()
	tun.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 65536)
	for {
		n, err := tun.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the SYN %v -> %v did not come out of the TUN", src, dst)
			}
			t.Fatalf("read the TUN: %v", err)
		}
		// Other packets (IPv6 neighbour and router solicitations) pass by.
		if s, d, err := parseSYN(buf[:n]); err == nil && s == src && d == dst {
			return
		}
	}
}
