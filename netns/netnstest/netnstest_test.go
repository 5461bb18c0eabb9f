package netnstest_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// recorder is a TB that remembers how the helper stopped the test.
type recorder struct {
	fatal, skip string
	cleanups    []func()
}

func (r *recorder) Helper()                           {}
func (r *recorder) Errorf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recorder) Skipf(format string, args ...any)  { r.skip = fmt.Sprintf(format, args...) }
func (r *recorder) Cleanup(f func())                  { r.cleanups = append(r.cleanups, f) }

func TestNeedFailsInCIAndSkipsElsewhere(t *testing.T) {
	t.Setenv("CI", "true")
	var r recorder
	netnstest.Need(&r, false, "this test needs %s", "a unicorn")
	if r.skip != "" || !strings.Contains(r.fatal, "this test needs a unicorn") || !strings.Contains(r.fatal, "CI=true") {
		t.Errorf("under CI=true: fatal %q, skip %q; want a failure naming the need", r.fatal, r.skip)
	}
	for _, ci := range []string{"", "false", "1"} {
		t.Setenv("CI", ci)
		r = recorder{}
		netnstest.Need(&r, false, "this test needs %s", "a unicorn")
		if r.fatal != "" || !strings.Contains(r.skip, "this test needs a unicorn") {
			t.Errorf("CI=%q: fatal %q, skip %q; want a skip naming the need", ci, r.fatal, r.skip)
		}
	}
	r = recorder{}
	netnstest.Need(&r, true, "never said")
	if r.fatal != "" || r.skip != "" {
		t.Errorf("a met need stopped the test: fatal %q, skip %q", r.fatal, r.skip)
	}
}

func TestRequireCommandNamesThePackage(t *testing.T) {
	t.Setenv("CI", "true")
	var r recorder
	if path := netnstest.RequireCommand(&r, "sh", "dash"); path == "" || r.fatal != "" {
		t.Errorf("sh: path %q, fatal %q", path, r.fatal)
	}
	netnstest.RequireCommand(&r, "tp-no-such-command", "tp-no-such-package")
	if !strings.Contains(r.fatal, "tp-no-such-command") || !strings.Contains(r.fatal, "apt-get install tp-no-such-package") {
		t.Errorf("missing command: fatal %q", r.fatal)
	}
}

func TestRequireRootFollowsTheEffectiveUser(t *testing.T) {
	t.Setenv("CI", "true")
	var r recorder
	netnstest.RequireRoot(&r)
	if stopped := r.fatal != ""; stopped != (os.Geteuid() != 0) {
		t.Errorf("euid %d: fatal %q", os.Geteuid(), r.fatal)
	}
}

// echoOnce answers one line on each connection of ln.
func echoOnce(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

func exchange(t *testing.T, dial func() (net.Conn, error)) {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}

// TestNamespacesAndVethsCarryTrafficAndGo joins two namespaces and the
// host with veth pairs, talks across both (IPv4 and IPv6), and checks that
// the namespaces and links are gone once the subtest's cleanups ran.
func TestNamespacesAndVethsCarryTrafficAndGo(t *testing.T) {
	netnstest.RequireRoot(t)
	var a, b *netns.Namespace
	var hostPair netnstest.Pair
	t.Run("build", func(t *testing.T) {
		a = netnstest.Namespace(t, "tpt-a")
		b = netnstest.Namespace(t, "tpt-b")
		if !strings.HasPrefix(a.Name(), "tpt-a-") || a.Name() == b.Name() {
			t.Fatalf("names %q and %q: want the prefix and a unique suffix", a.Name(), b.Name())
		}
		netnstest.LoopbackUp(t, b)
		netnstest.Veth(t, a, b,
			[]netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8::1/64")},
			[]netip.Prefix{netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64")})
		// The host end's subnet is routed on the host: one of its own per
		// run, from a range nothing here uses.
		sfx := netnstest.Suffix(t)
		hostNet := netip.AddrFrom4([4]byte{10, 215, sfx[0], sfx[1] &^ 3})
		hostAddr, bAddr := hostNet.Next(), hostNet.Next().Next()
		hostPair = netnstest.Veth(t, nil, b,
			[]netip.Prefix{netip.PrefixFrom(hostAddr, 30)}, []netip.Prefix{netip.PrefixFrom(bAddr, 30)})

		for _, addr := range []string{"192.0.2.2:7000", "[2001:db8::2]:7000", "127.0.0.1:7000", netip.AddrPortFrom(bAddr, 7000).String()} {
			echoOnce(netnstest.Listen(t, b, "tcp", addr))
		}
		for _, addr := range []string{"192.0.2.2:7000", "[2001:db8::2]:7000"} {
			exchange(t, func() (c net.Conn, err error) {
				err = a.Do(func() error {
					c, err = net.DialTimeout("tcp", addr, 5*time.Second)
					return err
				})
				return c, err
			})
		}
		exchange(t, func() (c net.Conn, err error) {
			err = b.Do(func() error {
				c, err = net.DialTimeout("tcp", "127.0.0.1:7000", 5*time.Second)
				return err
			})
			return c, err
		})
		exchange(t, func() (net.Conn, error) {
			return net.DialTimeout("tcp", netip.AddrPortFrom(bAddr, 7000).String(), 5*time.Second)
		})
		if _, err := netlink.LinkByName(hostPair.A); err != nil {
			t.Errorf("host end %s: %v", hostPair.A, err)
		}
	})
	if a == nil || b == nil {
		t.Fatal("the namespaces were not built")
	}
	for _, n := range []*netns.Namespace{a, b} {
		if names, _ := netns.List(n.Name()); len(names) != 0 {
			t.Errorf("namespace %s is left", n.Name())
		}
	}
	if _, err := netlink.LinkByName(hostPair.A); err == nil {
		t.Errorf("host end %s is left", hostPair.A)
	}
}
