package netnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
)

// Pair is a veth pair made by Veth: the name of each end in its namespace.
type Pair struct {
	A, B string
}

// Veth joins a and b with a veth pair named tpvSUFFIXa / tpvSUFFIXb, gives
// each end its addresses and brings both ends up. A nil namespace stands
// for the test process's own (the host's). IPv6 addresses skip duplicate
// address detection, so they work at once. The pair is deleted when the
// test ends (before namespaces made earlier in the test); the cleanup fails
// the test if an end is left on the host.
func Veth(t TB, a, b *netns.Namespace, addrsA, addrsB []netip.Prefix) Pair {
	t.Helper()
	RequireRoot(t)
	sfx := Suffix(t)
	p := Pair{A: "tpv" + sfx + "a", B: "tpv" + sfx + "b"}
	ha, err := handleIn(a)
	if err != nil {
		t.Fatalf("veth %s: %v", p.A, err)
	}
	defer ha.Close()
	peerNS, err := nsFile(b)
	if err != nil {
		t.Fatalf("veth %s: %v", p.A, err)
	}
	defer peerNS.Close()
	la := netlink.NewLinkAttrs()
	la.Name = p.A
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: p.B, PeerNamespace: netlink.NsFd(int(peerNS))}); err != nil {
		t.Fatalf("veth %s (peer %s in %s): %v", p.A, p.B, nameOf(b), err)
	}
	t.Cleanup(func() { deleteVeth(t, a, b, p) })

	hb, err := handleIn(b)
	if err != nil {
		t.Fatalf("veth %s: %v", p.B, err)
	}
	defer hb.Close()
	for _, end := range []struct {
		h     *netlink.Handle
		name  string
		ns    *netns.Namespace
		addrs []netip.Prefix
	}{{ha, p.A, a, addrsA}, {hb, p.B, b, addrsB}} {
		if err := configure(end.h, end.name, end.addrs); err != nil {
			t.Fatalf("veth end %s in %s: %v", end.name, nameOf(end.ns), err)
		}
	}
	return p
}

// configure gives the link its addresses and brings it up.
func configure(h *netlink.Handle, name string, addrs []netip.Prefix) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link: %w", err)
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("address %s: %w", a, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up: %w", err)
	}
	return nil
}

// deleteVeth removes the pair (deleting one end deletes both) and checks
// that no end is left on the host.
func deleteVeth(t TB, a, b *netns.Namespace, p Pair) {
	t.Helper()
	h, err := handleIn(a)
	if err != nil {
		// a's namespace is gone already, and the pair with it.
		return
	}
	defer h.Close()
	if link, err := h.LinkByName(p.A); err == nil {
		if err := h.LinkDel(link); err != nil {
			t.Errorf("delete veth %s in %s: %v", p.A, nameOf(a), err)
		}
	} else if !errors.As(err, &netlink.LinkNotFoundError{}) {
		t.Errorf("find veth %s in %s: %v", p.A, nameOf(a), err)
	}
	if a != nil && b != nil {
		return
	}
	for _, name := range []string{p.A, p.B} {
		if _, err := netlink.LinkByName(name); err == nil {
			t.Errorf("veth end %s is left on the host", name)
		}
	}
}

// handleIn is a netlink handle whose requests act inside n (nil: the host).
func handleIn(n *netns.Namespace) (*netlink.Handle, error) {
	if n == nil {
		return netlink.NewHandle()
	}
	fd, err := nsFile(n)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", n.Name(), err)
	}
	return h, nil
}

// nsFile opens n's namespace file (nil: the calling thread's, which for a
// goroutine not locked into another namespace is the host's).
func nsFile(n *netns.Namespace) (vns.NsHandle, error) {
	path := "/proc/thread-self/ns/net"
	if n != nil {
		path = n.Path()
	}
	h, err := vns.GetFromPath(path)
	if err != nil {
		return vns.None(), fmt.Errorf("open network namespace %s: %w", path, err)
	}
	return h, nil
}

func nameOf(n *netns.Namespace) string {
	if n == nil {
		return "the host namespace"
	}
	return n.Name()
}
