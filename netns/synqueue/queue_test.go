package synqueue

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/origdst"
)

// The queue number every lab uses: queues are per namespace.
const labQueue = 7

// appTimeout is the app's own connect() timeout where the test means it
// to end that way (the SYN dropped or left unanswered on the TUN).
const appTimeout = 2 * time.Second

// TestTakenSYNLandsOnTheRoutersListener holds the app's SYN, accepts it
// with the take mark, and checks that the app's connection arrives at the
// router's listener, which reads the destination the app dialed, and that
// bytes pass both ways (IPv4 and IPv6).
func TestTakenSYNLandsOnTheRoutersListener(t *testing.T) {
	for _, tc := range []struct {
		name string
		dst  netip.AddrPort
		dual bool // one dual-stack listener: IPv4 peers are ::ffff:a.b.c.d
		file bool // the queue passed on through File and FromFile
	}{{"IPv4", farDst4, false, false}, {"IPv6", farDst6, false, false}, {"IPv4 to a dual-stack listener", farDst4, true, false},
		{"IPv6 through File and FromFile", farDst6, false, true}} {
		dst := tc.dst
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			var ln *net.TCPListener
			var port uint16
			if tc.dual {
				ln = netnstest.Listen(t, l.ns, "tcp", "[::]:0").(*net.TCPListener)
				port = uint16(ln.Addr().(*net.TCPAddr).Port)
			} else {
				v4, v6, p := l.listen(t)
				ln, port = v4, p
				if dst.Addr().Is6() {
					ln = v6
				}
			}
			r := l.install(t, labQueue, port)
			open := l.open
			if tc.file {
				open = func(t *testing.T, num uint16, _ uint32) (*Queue, <-chan SYN) { return l.openFromFile(t, num) }
			}
			q, syns := open(t, labQueue, 0)

			src, res := l.dial(t, dst, 40101, waitLimit)
			syn := nextSYN(t, syns, src, dst)
			select {
			case r := <-res:
				t.Fatalf("the app's connect() ended while its SYN was held: %v", r.err)
			default:
			}
			if want := l.ifindex(t); syn.OutIfindex != want {
				t.Errorf("the SYN's out link is %d; want the TUN's %d", syn.OutIfindex, want)
			}
			if err := q.Verdict(syn.ID, Accept, r.Marks.With(syn.Mark, r.Marks.Take)); err != nil {
				t.Fatal(err)
			}

			ln.SetDeadline(time.Now().Add(waitLimit))
			c, err := ln.AcceptTCP()
			if err != nil {
				t.Fatalf("the router's listener: %v", err)
			}
			defer c.Close()
			if got, _ := netip.ParseAddrPort(c.RemoteAddr().String()); netip.AddrPortFrom(got.Addr().Unmap(), got.Port()) != src {
				t.Errorf("the listener's peer is %v; want the app's %v", got, src)
			}
			orig, err := origdst.Of(c)
			if err != nil || orig != dst {
				t.Errorf("OriginalDst = %v, %v; want %v", orig, err, dst)
			}
			app := waitDial(t, res)
			if app.err != nil {
				t.Fatalf("the app's connect(): %v", app.err)
			}
			if got, _ := netip.ParseAddrPort(app.conn.RemoteAddr().String()); got != dst {
				t.Errorf("the app sees its peer as %v; want %v", got, dst)
			}
			exchangeBytes(t, app.conn, c)
			if st := q.Stats(); st.Held != 1 || st.Passed != 0 || st.VerdictErrors != 0 {
				t.Errorf("stats %+v; want one SYN held, none passed, no verdict errors", st)
			}
			if err := q.Verdict(syn.ID, Accept, 0); !errors.Is(err, ErrNotHeld) {
				t.Errorf("a second verdict for the SYN: %v; want ErrNotHeld", err)
			}
		})
	}
}

// TestIPv6SYNWithExtensionHeadersIsRead: the kernel's own SYN with a
// hop-by-hop and a destination options header (set on the app's socket)
// is read through them and taken like any other.
func TestIPv6SYNWithExtensionHeadersIsRead(t *testing.T) {
	l := newLab(t)
	_, ln, port := l.listen(t)
	r := l.install(t, labQueue, port)
	q, syns := l.open(t, labQueue, 0)
	// struct ipv6_opt_hdr (next header, filled in by the kernel; length
	// in 8-byte units past the first 8) and a PadN option of 4 bytes.
	padded := string([]byte{0, 0, 1, 4, 0, 0, 0, 0})
	src, res := l.dialWith(t, farDst6, 40112, waitLimit, func(fd int) error {
		return errors.Join(
			unix.SetsockoptString(fd, unix.IPPROTO_IPV6, unix.IPV6_HOPOPTS, padded),
			unix.SetsockoptString(fd, unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, padded))
	})
	syn := nextSYN(t, syns, src, farDst6)
	if err := q.Verdict(syn.ID, Accept, r.Marks.With(syn.Mark, r.Marks.Take)); err != nil {
		t.Fatal(err)
	}
	ln.SetDeadline(time.Now().Add(waitLimit))
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("the router's listener: %v", err)
	}
	defer c.Close()
	if orig, err := origdst.Of(c); err != nil || orig != farDst6 {
		t.Errorf("OriginalDst = %v, %v; want %v", orig, err, farDst6)
	}
	if app := waitDial(t, res); app.err != nil {
		t.Fatalf("the app's connect(): %v", app.err)
	}
	if st := q.Stats(); st.Passed != 0 {
		t.Errorf("stats %+v: a SYN was passed on unread", st)
	}
}

// TestVerdictsNeedNotFollowQueueOrder holds two SYNs and answers the
// second first: each gets its own outcome.
func TestVerdictsNeedNotFollowQueueOrder(t *testing.T) {
	l := newLab(t)
	v4, _, port := l.listen(t)
	r := l.install(t, labQueue, port)
	q, syns := l.open(t, labQueue, 0)

	src1, res1 := l.dial(t, farDst6, 40113, waitLimit)
	first := nextSYN(t, syns, src1, farDst6)
	src2, res2 := l.dial(t, farDst4, 40114, waitLimit)
	second := nextSYN(t, syns, src2, farDst4)
	if err := q.Verdict(second.ID, Accept, r.Marks.With(second.Mark, r.Marks.Take)); err != nil {
		t.Fatal(err)
	}
	v4.SetDeadline(time.Now().Add(waitLimit))
	c, err := v4.AcceptTCP()
	if err != nil {
		t.Fatalf("the router's listener: %v", err)
	}
	c.Close()
	if app := waitDial(t, res2); app.err != nil {
		t.Fatalf("the second app's connect(): %v", app.err)
	}
	select {
	case r := <-res1:
		t.Fatalf("the first app's connect() ended while its SYN was held: %v", r.err)
	default:
	}
	if err := q.Verdict(first.ID, Accept, r.Marks.With(first.Mark, r.Marks.Refuse)); err != nil {
		t.Fatal(err)
	}
	if app := waitDial(t, res1); !errors.Is(app.err, syscall.ECONNREFUSED) {
		t.Fatalf("the first app's connect(): %v, %v; want ECONNREFUSED", app.conn, app.err)
	}
}

// TestRefusedSYNRefusesTheAppsConnect accepts the SYN with the refuse mark:
// the app's connect() fails with ECONNREFUSED, as against a closed port.
func TestRefusedSYNRefusesTheAppsConnect(t *testing.T) {
	for _, dst := range []netip.AddrPort{farDst4, farDst6} {
		t.Run(family(dst), func(t *testing.T) {
			l := newLab(t)
			v4, v6, port := l.listen(t)
			r := l.install(t, labQueue, port)
			q, syns := l.open(t, labQueue, 0)

			src, res := l.dial(t, dst, 40102, waitLimit)
			syn := nextSYN(t, syns, src, dst)
			if err := q.Verdict(syn.ID, Accept, r.Marks.With(syn.Mark, r.Marks.Refuse)); err != nil {
				t.Fatal(err)
			}
			if app := waitDial(t, res); !errors.Is(app.err, syscall.ECONNREFUSED) {
				t.Fatalf("the app's connect(): %v, %v; want ECONNREFUSED", app.conn, app.err)
			}
			// The refusal is answered: nothing reached the router's listener.
			for _, ln := range []*net.TCPListener{v4, v6} {
				ln.SetDeadline(time.Now())
				if c, err := ln.Accept(); err == nil {
					c.Close()
					t.Errorf("the listener %v accepted a connection from %v", ln.Addr(), c.RemoteAddr())
				}
			}
		})
	}
}

// TestDroppedSYNLeavesTheAppToItsOwnTimeout drops the app's SYN, and its
// retransmissions, which are held again (the connection was never
// confirmed): the app's connect() ends at its own deadline.
func TestDroppedSYNLeavesTheAppToItsOwnTimeout(t *testing.T) {
	for _, dst := range []netip.AddrPort{farDst4, farDst6} {
		t.Run(family(dst), func(t *testing.T) {
			l := newLab(t)
			_, _, port := l.listen(t)
			l.install(t, labQueue, port)
			q, syns := l.open(t, labQueue, 0)

			src, res := l.dial(t, dst, 40103, appTimeout)
			dropped := 0
			for {
				select {
				case s := <-syns:
					if s.Src != src || s.Dst != dst {
						t.Fatalf("queued SYN %v -> %v; want %v -> %v", s.Src, s.Dst, src, dst)
					}
					if err := q.Verdict(s.ID, Drop, 0); err != nil {
						t.Fatal(err)
					}
					dropped++
					continue
				case app := <-res:
					var ne net.Error
					if !errors.As(app.err, &ne) || !ne.Timeout() {
						t.Fatalf("the app's connect(): %v, %v; want its timeout", app.conn, app.err)
					}
				case <-time.After(waitLimit):
					t.Fatal("the app's connect() did not end")
				}
				break
			}
			if dropped == 0 {
				t.Error("no SYN was queued")
			}
		})
	}
}

// TestUnreadQueueLetsSYNsThrough: with the rules installed and no socket
// bound to their queue, the SYN goes on to the TUN (--queue-bypass).
func TestUnreadQueueLetsSYNsThrough(t *testing.T) {
	for _, dst := range []netip.AddrPort{farDst4, farDst6} {
		t.Run(family(dst), func(t *testing.T) {
			l := newLab(t)
			_, _, port := l.listen(t)
			l.install(t, labQueue, port)
			tun := l.tunReader(t)
			src, _ := l.dial(t, dst, 40104, appTimeout)
			onTUN(t, tun, src, dst)
		})
	}
}

// TestAppsOwnMarkIsCleared: an app that marks its socket with the take
// mark itself (SO_MARK) neither reaches the router's listener past an
// unbound queue nor shows the router that mark.
func TestAppsOwnMarkIsCleared(t *testing.T) {
	l := newLab(t)
	_, _, port := l.listen(t)
	l.install(t, labQueue, port)
	tun := l.tunReader(t)
	const other = 0x4 // a bit of the app's own, outside Marks.Mask
	src, _ := l.dialMarked(t, farDst4, 40109, appTimeout, DefaultMarks.Take|other)
	onTUN(t, tun, src, farDst4)

	q, syns := l.open(t, labQueue, 0)
	src, _ = l.dialMarked(t, farDst6, 40110, appTimeout, DefaultMarks.Take|other)
	syn := nextSYN(t, syns, src, farDst6)
	if syn.Mark != other {
		t.Errorf("the queued SYN's mark is %#x; want the app's %#x without the take bits", syn.Mark, other)
	}
	if err := q.Verdict(syn.ID, Accept, syn.Mark); err != nil {
		t.Fatal(err)
	}
	onTUN(t, tun, src, farDst6)
}

// TestClosedQueuePassesHeldSYNsOn: Close lets a SYN it holds go on to the
// TUN at once, and SYNs after Close go there unheld.
func TestClosedQueuePassesHeldSYNsOn(t *testing.T) {
	for _, dst := range []netip.AddrPort{farDst4, farDst6} {
		t.Run(family(dst), func(t *testing.T) {
			l := newLab(t)
			_, _, port := l.listen(t)
			l.install(t, labQueue, port)
			q, syns := l.open(t, labQueue, 0)
			tun := l.tunReader(t)

			src, _ := l.dial(t, dst, 40105, appTimeout)
			syn := nextSYN(t, syns, src, dst)
			// A loaded machine may hold the SYN past its 1 s RTO; the
			// retransmission is queued and held too, so what tells a
			// passed-on SYN from a dropped one is a retransmission between
			// Close and the SYN on the TUN.
			before := l.retransmits(t)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			onTUN(t, tun, src, dst)
			if n := l.retransmits(t) - before; n != 0 {
				t.Errorf("the SYN on the TUN came after %d retransmissions since Close; want the held one passed on at Close", n)
			}
			if err := q.Verdict(syn.ID, Accept, 0); !errors.Is(err, ErrClosed) {
				t.Errorf("a verdict after Close: %v; want ErrClosed", err)
			}
			if st := q.Stats(); st.Passed == 0 || st.Passed != st.Held {
				t.Errorf("stats %+v; want every held SYN passed on", st)
			}

			src, _ = l.dial(t, dst, 40106, appTimeout)
			onTUN(t, tun, src, dst)
		})
	}
}

// TestFullQueueFailsOpen: with room for one SYN, a second goes on to the
// TUN while the first is held.
func TestFullQueueFailsOpen(t *testing.T) {
	l := newLab(t)
	_, _, port := l.listen(t)
	l.install(t, labQueue, port)
	_, syns := l.open(t, labQueue, 1)
	tun := l.tunReader(t)

	src, _ := l.dial(t, farDst4, 40107, appTimeout)
	nextSYN(t, syns, src, farDst4)
	src, _ = l.dial(t, farDst6, 40108, appTimeout)
	onTUN(t, tun, src, farDst6)
}

// TestQueueRunsAndClosesCleanly checks the queue's own contract: one
// socket per queue number, verdicts only for held SYNs, Run ends with its
// context and can run again.
func TestQueueRunsAndClosesCleanly(t *testing.T) {
	l := newLab(t)
	q, err := Open(l.ns, Config{Num: labQueue})
	if err != nil {
		netnstest.Need(t, false, "open the SYN queue: %v", err)
	}
	defer q.Close()
	if q2, err := Open(l.ns, Config{Num: labQueue}); err == nil {
		q2.Close()
		t.Error("a second socket bound the same queue")
	} else if !strings.Contains(err.Error(), "bind queue 7 in "+l.ns.String()) || !strings.Contains(err.Error(), "another socket holds this queue number") {
		t.Errorf("a second socket on the queue: %v; want an error naming the queue, the namespace and the likely cause", err)
	}
	if _, err := Open(l.ns, Config{Num: labQueue + 1, MaxLen: maxMaxLen + 1}); err == nil || !strings.Contains(err.Error(), "MaxLen") {
		t.Errorf("MaxLen past its bound: %v; want an error naming MaxLen", err)
	}
	if err := q.Verdict(12345, Accept, 0); !errors.Is(err, ErrNotHeld) {
		t.Errorf("verdict for an id never queued: %v; want ErrNotHeld", err)
	}
	if err := q.Verdict(1, Decision(7), 0); err == nil {
		t.Error("Decision(7) was accepted")
	}
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- q.Run(ctx, func(SYN) {}) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run %d: %v", i, err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("run %d did not end with its context", i)
		}
	}
	if err := q.Close(); err != nil {
		t.Error(err)
	}
	if err := q.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func family(a netip.AddrPort) string {
	if a.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// exchangeBytes sends a line each way between the app's end a and the
// router's end b.
func exchangeBytes(t *testing.T, a, b net.Conn) {
	t.Helper()
	for _, p := range [][2]net.Conn{{a, b}, {b, a}} {
		p[0].SetDeadline(time.Now().Add(waitLimit))
		p[1].SetDeadline(time.Now().Add(waitLimit))
		if _, err := p[0].Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(p[1], buf); err != nil || string(buf) != "ping" {
			t.Fatalf("read %q, %v; want ping", buf, err)
		}
	}
}

// TestRefusedVerdictDoesNotStopRun: a verdict the kernel refuses (for a
// packet it does not hold) comes back to Run as an error message; Run
// counts it and goes on handing SYNs over.
func TestRefusedVerdictDoesNotStopRun(t *testing.T) {
	l := newLab(t)
	_, _, port := l.listen(t)
	l.install(t, labQueue, port)
	q, syns := l.open(t, labQueue, 0)
	// Past Verdict's own check, as a verdict racing the kernel would be.
	q.mu.Lock()
	_, err := q.conn.Send(verdictMessage(labQueue, 0xfffffff0, true, 0, false))
	q.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(waitLimit); q.Stats().VerdictErrors == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the kernel's refusal of the verdict was not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	src, _ := l.dial(t, farDst4, 40111, appTimeout)
	syn := nextSYN(t, syns, src, farDst4)
	if err := q.Verdict(syn.ID, Drop, 0); err != nil {
		t.Fatal(err)
	}
}
