package incoming_test

// Root, namespace and veth helpers of this package's tests: stand-ins for
// the shared test-helper package (netns/netnstest) until it exists, kept
// in this one file so that they are swapped in one place.

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// requireCommands stops the test (see netnstest.Need) unless every
// command is on PATH; debianPackage brings them.
func requireCommands(t testing.TB, debianPackage string, names ...string) {
	t.Helper()
	for _, name := range names {
		netnstest.RequireCommand(t, name, debianPackage)
	}
}

// inNS runs fn on an OS thread of its own inside ns, so that the sockets,
// netlink connections and child processes fn makes belong to ns. The
// thread is never unlocked: Go ends it with the goroutine, and with it
// the namespace switch. Goroutines fn starts run elsewhere, outside ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter the test's network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// newNetns makes a network namespace with loopback up. It is held by its
// file descriptor only (no name under /run/netns), so it vanishes, with
// its links and nat rules, once the test closes it and the last process
// and socket in it are gone.
func newNetns(t testing.TB) netns.NsHandle {
	t.Helper()
	type made struct {
		h   netns.NsHandle
		err error
	}
	c := make(chan made, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread stays in the new namespace and ends here
		h, err := netns.New()
		c <- made{h, err}
	}()
	m := <-c
	if m.err != nil {
		t.Fatalf("new network namespace: %v", m.err)
	}
	t.Cleanup(func() { m.h.Close() })
	nh, err := netlink.NewHandleAt(m.h)
	if err != nil {
		t.Fatalf("netlink in the new namespace: %v", err)
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err == nil {
		err = nh.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up in the new namespace: %v", err)
	}
	return m.h
}

// vethEnd is one end of a veth pair: its namespace, name and addresses.
type vethEnd struct {
	ns    netns.NsHandle
	name  string
	addrs []netip.Prefix
}

// joinByVeth links a and b with a veth pair (created inside a's
// namespace, never the host's), gives both ends their addresses (without
// IPv6 duplicate detection, so they work at once) and brings them up.
func joinByVeth(t testing.TB, a, b vethEnd) {
	t.Helper()
	ah, err := netlink.NewHandleAt(a.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer ah.Close()
	bh, err := netlink.NewHandleAt(b.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	la := netlink.NewLinkAttrs()
	la.Name = a.name
	if err := ah.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: b.name, PeerNamespace: netlink.NsFd(b.ns)}); err != nil {
		t.Fatalf("veth pair %s/%s: %v", a.name, b.name, err)
	}
	for _, end := range []struct {
		h *netlink.Handle
		vethEnd
	}{{ah, a}, {bh, b}} {
		link, err := end.h.LinkByName(end.name)
		if err != nil {
			t.Fatalf("find %s: %v", end.name, err)
		}
		for _, p := range end.addrs {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
			if err := end.h.AddrAdd(link, addr); err != nil {
				t.Fatalf("address %s on %s: %v", p, end.name, err)
			}
		}
		if err := end.h.LinkSetUp(link); err != nil {
			t.Fatalf("%s up: %v", end.name, err)
		}
	}
	waitOperUp(t, ah, a.name)
	waitOperUp(t, bh, b.name)
}

// waitOperUp waits for a link's carrier: packets sent before it are lost
// (a first SYN then waits a second for its retransmission).
func waitOperUp(t testing.TB, h *netlink.Handle, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		link, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		if link.Attrs().OperState == netlink.OperUp {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not operationally up within 5s: %s", name, link.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialFrom opens a TCP connection from inside ns to addr (a literal
// address: a name lookup would run on another thread, outside ns).
func dialFrom(ns netns.NsHandle, addr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := inNS(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), 5*time.Second)
		return err
	})
	return c, err
}

// listenIn opens a TCP listener inside ns on address ("[::]:0" takes
// every address of both families).
func listenIn(ns netns.NsHandle, address string) (net.Listener, error) {
	var ln net.Listener
	err := inNS(ns, func() (err error) {
		ln, err = net.Listen("tcp", address)
		return err
	})
	return ln, err
}
