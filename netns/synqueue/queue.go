package synqueue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
)

// DefaultMaxLen is Config.MaxLen's default: as many SYNs as the router
// holds dials (the kernel's own default is 1024).
const DefaultMaxLen = 16384

// maxMaxLen bounds Config.MaxLen: each held SYN pins a packet in the kernel.
const maxMaxLen = 1 << 20

// recvBuffer is the queue socket's receive buffer: a burst of SYNs waits
// there for Run. When it overflows the kernel lets the SYN through (FAIL_OPEN).
const recvBuffer = 1 << 20

// Config says which queue to open and how many SYNs it may hold.
type Config struct {
	// Num is the queue number, the NFQUEUE rule's --queue-num.
	Num uint16
	// MaxLen is how many SYNs the kernel holds for this queue at once;
	// beyond it the queue fails open (the SYN goes on unheld). 0 means
	// DefaultMaxLen.
	MaxLen uint32
}

// Decision is a verdict's kind.
type Decision int

const (
	// Drop discards the SYN. The app's TCP then retransmits it about once
	// a second (a local drop is a transmit error, without backoff) until
	// its own SYN timeout: hold a SYN until the dial's timeout, then drop.
	Drop Decision = iota
	// Accept lets the SYN go on with the verdict's mark.
	Accept
)

func (d Decision) String() string {
	switch d {
	case Drop:
		return "drop"
	case Accept:
		return "accept"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// ErrNotHeld is Verdict's error for a packet id the queue does not hold:
// one never queued, already given its verdict, or passed on by the queue.
var ErrNotHeld = errors.New("packet is not held by the queue")

// ErrClosed is Verdict's error after Close.
var ErrClosed = errors.New("queue is closed")

// Stats counts what a queue did.
type Stats struct {
	// Held counts the SYNs handed to Run's handler.
	Held uint64
	// Passed counts packets the queue accepted itself, unmarked: those it
	// could not read as a SYN, and those still held at Close.
	Passed uint64
	// Unreadable counts messages without a packet id (the kernel keeps
	// such a packet until the queue closes, then drops it).
	Unreadable uint64
	// VerdictErrors counts verdicts the kernel refused (it says so
	// asynchronously, without saying which).
	VerdictErrors uint64
}

// Queue is a bound nfnetlink_queue: the SYNs the NFQUEUE rule sends to
// Config.Num, held until Verdict. It lives in the namespace it was opened in.
type Queue struct {
	conn  *netlink.Conn
	num   uint16
	where string // the namespace, for errors

	// mu orders verdicts with Close: held is the set of ids waiting for a
	// verdict (bounded by MaxLen), and every verdict is sent under mu so
	// that Close can pass on exactly those left.
	mu     sync.Mutex
	held   map[uint32]struct{}
	closed bool

	running                               atomic.Bool
	nHeld, nPassed, nUnreadable, nVerdErr atomic.Uint64
}

// Open binds queue cfg.Num inside n (nil: the calling thread's namespace)
// in copy-packet mode, with the queue bounded by cfg.MaxLen and failing
// open when full. Start Run to receive the SYNs; Close releases the queue.
func Open(n *netns.Namespace, cfg Config) (*Queue, error) {
	if cfg.MaxLen == 0 {
		cfg.MaxLen = DefaultMaxLen
	}
	if cfg.MaxLen > maxMaxLen {
		return nil, fmt.Errorf("synqueue: MaxLen %d is invalid: want 1 to %d (0 for %d)", cfg.MaxLen, maxMaxLen, DefaultMaxLen)
	}
	where := "the calling thread's netns"
	var nc netlink.Config
	if n != nil {
		where = n.String()
		f, err := os.Open(n.Path())
		if err != nil {
			return nil, fmt.Errorf("synqueue: open %s: %w", n, err)
		}
		defer f.Close()
		nc.NetNS = int(f.Fd())
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &nc)
	if err != nil {
		return nil, fmt.Errorf("synqueue: netfilter netlink socket in %s: %w (is CONFIG_NETFILTER_NETLINK in the kernel?)", where, err)
	}
	q := &Queue{conn: conn, num: cfg.Num, where: where, held: map[uint32]struct{}{}}
	if err := q.configure(cfg.MaxLen); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// configure binds the queue and sets its parameters.
func (q *Queue) configure(maxLen uint32) error {
	// A full socket buffer makes the kernel fail open, not report ENOBUFS
	// to a reader that cannot tell what it lost.
	if err := q.conn.SetOption(netlink.NoENOBUFS, true); err != nil {
		return fmt.Errorf("synqueue: queue %d in %s: set NETLINK_NO_ENOBUFS: %w", q.num, q.where, err)
	}
	if err := q.conn.SetReadBuffer(recvBuffer); err != nil {
		return fmt.Errorf("synqueue: queue %d in %s: receive buffer: %w", q.num, q.where, err)
	}
	bind, err := bindMessage(q.num)
	if err != nil {
		return err
	}
	if _, err := q.conn.Execute(bind); err != nil {
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EBUSY):
			return fmt.Errorf("synqueue: bind queue %d in %s: %w (another socket holds this queue number, or the process lacks CAP_NET_ADMIN there)", q.num, q.where, err)
		default:
			return fmt.Errorf("synqueue: bind queue %d in %s: %w (does the kernel have nfnetlink_queue? CONFIG_NETFILTER_NETLINK_QUEUE, or modprobe nfnetlink_queue)", q.num, q.where, err)
		}
	}
	params, err := paramsMessage(q.num, maxLen)
	if err != nil {
		return err
	}
	if _, err := q.conn.Execute(params); err != nil {
		return fmt.Errorf("synqueue: queue %d in %s: set copy-packet mode (%d bytes), max length %d and FAIL_OPEN: %w", q.num, q.where, copyRange, maxLen, err)
	}
	return nil
}

// Run receives the queued SYNs and calls handle with each, on Run's own
// goroutine: handle must hand the SYN on and return (every SYN waits in the
// kernel until its Verdict; the queue's bound is Config.MaxLen). A packet
// that is not a readable TCP SYN is accepted unmarked at once and not
// handed on. Run returns nil when ctx ends or the queue is closed, and an
// error when receiving fails otherwise. One Run at a time.
func (q *Queue) Run(ctx context.Context, handle func(SYN)) error {
	if !q.running.CompareAndSwap(false, true) {
		return fmt.Errorf("synqueue: queue %d in %s: Run is already running", q.num, q.where)
	}
	defer q.running.Store(false)
	if err := q.conn.SetReadDeadline(time.Time{}); err != nil {
		if q.isClosed() {
			return nil
		}
		return fmt.Errorf("synqueue: queue %d in %s: %w", q.num, q.where, err)
	}
	// A deadline in the past wakes the blocked Receive when ctx ends.
	stop := context.AfterFunc(ctx, func() { q.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		msgs, err := q.conn.Receive()
		if err != nil {
			if ctx.Err() != nil || q.isClosed() {
				return nil
			}
			// A netlink error message, not a failing socket: the kernel
			// refused a verdict (an id it no longer holds, say).
			var se *os.SyscallError
			var errno unix.Errno
			if !errors.As(err, &se) && errors.As(err, &errno) {
				q.nVerdErr.Add(1)
				continue
			}
			return fmt.Errorf("synqueue: receive from queue %d in %s: %w", q.num, q.where, err)
		}
		for _, m := range msgs {
			q.receive(m, handle)
		}
	}
}

// receive handles one message from the kernel.
func (q *Queue) receive(m netlink.Message, handle func(SYN)) {
	if m.Header.Type != msgPacket {
		return // an acknowledgement: nothing is held for it
	}
	p, err := parsePacketMessage(m.Data)
	if err != nil {
		q.nUnreadable.Add(1)
		return
	}
	syn := SYN{ID: p.id, Mark: p.mark, OutIfindex: p.outDev}
	syn.Src, syn.Dst, err = parseSYN(p.payload)
	q.mu.Lock()
	if err != nil || q.closed {
		// Not ours to decide: the packet goes on as if never queued.
		q.conn.Send(verdictMessage(q.num, p.id, true, 0, false))
		q.mu.Unlock()
		q.nPassed.Add(1)
		return
	}
	q.held[p.id] = struct{}{}
	q.mu.Unlock()
	q.nHeld.Add(1)
	handle(syn)
}

// Verdict ends the hold of SYN id: Drop discards it, Accept lets it go on
// with mark as its mark (Marks.Take or Marks.Refuse for the rules' two
// outcomes; SYN.Mark to keep the one it had). It fails with ErrNotHeld for
// an id not held and ErrClosed after Close.
func (q *Queue) Verdict(id uint32, d Decision, mark uint32) error {
	if d != Drop && d != Accept {
		return fmt.Errorf("synqueue: verdict %d is invalid: want Drop or Accept", int(d))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("synqueue: %s packet %d of queue %d: %w", d, id, q.num, ErrClosed)
	}
	if _, ok := q.held[id]; !ok {
		return fmt.Errorf("synqueue: %s packet %d of queue %d: %w", d, id, q.num, ErrNotHeld)
	}
	if _, err := q.conn.Send(verdictMessage(q.num, id, d == Accept, mark, true)); err != nil {
		return fmt.Errorf("synqueue: %s packet %d of queue %d in %s: %w", d, id, q.num, q.where, err)
	}
	delete(q.held, id)
	return nil
}

// Stats returns the queue's counters so far.
func (q *Queue) Stats() Stats {
	return Stats{Held: q.nHeld.Load(), Passed: q.nPassed.Load(), Unreadable: q.nUnreadable.Load(), VerdictErrors: q.nVerdErr.Load()}
}

func (q *Queue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// Close accepts every SYN still held, unmarked, so that each goes on its
// usual way at once (instead of the kernel dropping it and the app waiting
// a second for its retransmit), then closes the socket, which unbinds the
// queue: from then on the NFQUEUE rule's bypass lets SYNs through. Run
// returns. Closing twice is a no-op.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	var errs []error
	for id := range q.held {
		if _, err := q.conn.Send(verdictMessage(q.num, id, true, 0, false)); err != nil {
			errs = append(errs, fmt.Errorf("pass on packet %d: %w", id, err))
			continue
		}
		q.nPassed.Add(1)
	}
	clear(q.held)
	q.mu.Unlock()
	if err := q.conn.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("synqueue: close queue %d in %s: %w", q.num, q.where, err)
	}
	return nil
}
