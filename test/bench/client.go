package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// clientResult is what a client run prints as its last line of output.
type clientResult struct {
	Bps         float64 `json:"bps,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	P50         float64 `json:"p50_us,omitempty"`
	P99         float64 `json:"p99_us,omitempty"`
	P999        float64 `json:"p999_us,omitempty"`
	Count       int64   `json:"count,omitempty"`
	Errors      int64   `json:"errors,omitempty"`
	FirstError  string  `json:"first_error,omitempty"`
	StartNS     int64   `json:"start_ns,omitempty"`
	FirstByteNS int64   `json:"first_byte_ns,omitempty"`
}

// clientMain is the load generator: the bench runs its own binary as
// "bench client TEST ..." inside the sandbox (trafficpolice's path) or in
// the pod netns (the kernel's path), so both paths run the same code.
func clientMain(args []string) int {
	start := time.Now()
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "bench client: want a test name: tcp-up, tcp-down, rr, crr, udp, dns, hold, start")
		return 2
	}
	test := args[0]
	fs := flag.NewFlagSet("client "+test, flag.ContinueOnError)
	addr := fs.String("addr", "", "server HOST:PORT")
	flows := fs.Int("flows", 1, "parallel TCP flows")
	dur := fs.Duration("dur", 2*time.Second, "how long to measure")
	size := fs.Int("size", 1, "message or datagram size in bytes")
	conc := fs.Int("conc", 32, "concurrent clients")
	name := fs.String("name", "", "DNS name to ask for")
	unique := fs.Bool("unique", false, "ask for a name never asked before each time (q<client>-<n>.NAME): no cache can answer")
	n := fs.Int("n", 10000, "connections to open and hold")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ctx := context.Background()
	var res clientResult
	var err error
	switch test {
	case "tcp-up":
		res, err = tcpBulk(ctx, *addr, *flows, *dur, true)
	case "tcp-down":
		res, err = tcpBulk(ctx, *addr, *flows, *dur, false)
	case "rr":
		res, err = requestResponse(*addr, *size, *dur)
	case "crr":
		res, err = connectRate(*addr, *conc, *dur)
	case "udp":
		res, err = udpRate(*addr, *size, *conc, *dur)
	case "dns":
		res, err = dnsRate(*addr, *name, *unique, *conc, *dur)
	case "hold":
		err = holdFlows(*addr, *n)
	case "start":
		res, err = firstByte(start, *addr)
	default:
		err = fmt.Errorf("unknown test %q: want tcp-up, tcp-down, rr, crr, udp, dns, hold or start", test)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench client %s: %v\n", test, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// tcpBulk moves bytes over flows connections for dur: up (client → server,
// timed until the server has counted every byte) or down (server → client,
// timed until the last byte arrived).
func tcpBulk(ctx context.Context, addr string, flows int, dur time.Duration, up bool) (clientResult, error) {
	conns := make([]net.Conn, flows)
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return clientResult{}, fmt.Errorf("dial %s: %w", addr, err)
		}
		defer c.Close()
		conns[i] = c
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, flows)
	begin := time.Now()
	end := begin.Add(dur)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n int64
			var err error
			if up {
				n, err = upload(c, end)
			} else {
				n, err = download(c, dur)
			}
			total.Add(n)
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	close(errs)
	if err := <-errs; err != nil {
		return clientResult{}, err
	}
	return clientResult{Bps: float64(total.Load()) * 8 / elapsed.Seconds(), Count: total.Load()}, nil
}

func upload(c net.Conn, end time.Time) (int64, error) {
	buf := make([]byte, chunkSize)
	if _, err := c.Write([]byte{'U'}); err != nil {
		return 0, err
	}
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			return 0, fmt.Errorf("upload: %w", err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, err
	}
	var ans [8]byte
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		return 0, fmt.Errorf("upload: read the server's count: %w", err)
	}
	return int64(binary.BigEndian.Uint64(ans[:])), nil
}

func download(c net.Conn, dur time.Duration) (int64, error) {
	var req [9]byte
	req[0] = 'D'
	binary.BigEndian.PutUint64(req[1:], uint64(dur))
	if _, err := c.Write(req[:]); err != nil {
		return 0, err
	}
	c.SetReadDeadline(time.Now().Add(dur + 30*time.Second))
	n, err := io.CopyBuffer(io.Discard, onlyReader{c}, make([]byte, chunkSize))
	if err != nil {
		return n, fmt.Errorf("download: %w", err)
	}
	return n, nil
}

// requestResponse sends size-byte messages on one connection, waiting for
// each echo, and reports the round trips' percentiles.
func requestResponse(addr string, size int, dur time.Duration) (clientResult, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return clientResult{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return clientResult{}, err
	}
	msg := make([]byte, size)
	back := make([]byte, size)
	samples := make([]time.Duration, 0, 1<<16)
	// A short warm-up settles the path (first flow setup, page faults).
	warm := time.Now().Add(dur / 10)
	end := time.Now().Add(dur)
	for {
		t0 := time.Now()
		if t0.After(end) {
			break
		}
		if _, err := c.Write(msg); err != nil {
			return clientResult{}, err
		}
		if _, err := io.ReadFull(c, back); err != nil {
			return clientResult{}, err
		}
		if t0.After(warm) {
			samples = append(samples, time.Since(t0))
		}
	}
	if len(samples) == 0 {
		return clientResult{}, errors.New("no round trip completed")
	}
	slices.Sort(samples)
	return clientResult{
		P50: us(percentile(samples, 0.50)), P99: us(percentile(samples, 0.99)), P999: us(percentile(samples, 0.999)),
		Count: int64(len(samples)),
	}, nil
}

// rateWindow counts events after a warm-up of a fifth of the run: the
// first moments of a fresh process (goroutine stacks growing, pools
// filling) are not its steady state.
type rateWindow struct {
	warm time.Time
	n    atomic.Int64
}

func newRateWindow(dur time.Duration) *rateWindow {
	return &rateWindow{warm: time.Now().Add(dur / 5)}
}

func (w *rateWindow) add() {
	if time.Now().After(w.warm) {
		w.n.Add(1)
	}
}

func (w *rateWindow) rate() float64 {
	return float64(w.n.Load()) / time.Since(w.warm).Seconds()
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// connectRate runs conc clients that each connect, send one byte, read the
// answer and the server's close, and close, for dur.
func connectRate(addr string, conc int, dur time.Duration) (clientResult, error) {
	var done, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	win := newRateWindow(dur)
	end := time.Now().Add(dur)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b [1]byte
			for time.Now().Before(end) {
				err := func() error {
					c, err := net.DialTimeout("tcp", addr, 5*time.Second)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Write([]byte{'x'}); err != nil {
						return err
					}
					if _, err := io.ReadFull(c, b[:]); err != nil {
						return err
					}
					// Wait for the server's close, so its side (not ours)
					// keeps the TIME_WAIT and ports do not run out.
					if _, err := c.Read(b[:]); err != io.EOF {
						return fmt.Errorf("want the server's close, got %v", err)
					}
					return nil
				}()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				done.Add(1)
				win.add()
			}
		}()
	}
	wg.Wait()
	res := clientResult{Rate: win.rate(), Count: done.Load(), Errors: failed.Load()}
	if s, ok := firstErr.Load().(string); ok {
		res.FirstError = s
	}
	if done.Load() == 0 {
		return res, fmt.Errorf("no connection completed: %s", res.FirstError)
	}
	return res, nil
}

// udpRate keeps up to window datagrams of size bytes in flight to the echo
// server on one connected socket and counts the echoes that come back. A
// datagram lost on the way is given up after a short wait, as the window
// would otherwise shrink for good.
func udpRate(addr string, size, window int, dur time.Duration) (clientResult, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return clientResult{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	msg := make([]byte, size)
	buf := make([]byte, 65536)
	credits := make(chan struct{}, window)
	for range window {
		credits <- struct{}{}
	}
	var echoed atomic.Int64
	win := newRateWindow(dur)
	end := time.Now().Add(dur)
	go func() {
		for {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := c.Read(buf); err != nil {
				if time.Now().After(end) {
					return
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					// Lost datagrams: give their credits back.
					for len(credits) < window {
						credits <- struct{}{}
					}
				}
				continue
			}
			echoed.Add(1)
			win.add()
			select {
			case credits <- struct{}{}:
			default:
			}
		}
	}()
	for time.Now().Before(end) {
		select {
		case <-credits:
		case <-time.After(50 * time.Millisecond):
			continue
		}
		c.Write(msg)
	}
	n := echoed.Load()
	if n == 0 {
		return clientResult{}, errors.New("no datagram came back")
	}
	return clientResult{Rate: win.rate(), Count: n}, nil
}

// dnsRate runs conc clients asking server for name's A record for dur.
func dnsRate(server, name string, unique bool, conc int, dur time.Duration) (clientResult, error) {
	var done, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	win := newRateWindow(dur)
	end := time.Now().Add(dur)
	for client := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			conn, err := cl.Dial(server)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			defer conn.Close()
			q := new(dns.Msg)
			q.SetQuestion(dns.Fqdn(name), dns.TypeA)
			for i := 0; time.Now().Before(end); i++ {
				if unique {
					q.Question[0].Name = dns.Fqdn(fmt.Sprintf("q%d-%d.%s", client, i, name))
				}
				q.Id = dns.Id()
				m, _, err := cl.ExchangeWithConn(q, conn)
				if err == nil && (m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0) {
					err = fmt.Errorf("answer %s with %d records", dns.RcodeToString[m.Rcode], len(m.Answer))
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				done.Add(1)
				win.add()
			}
		}()
	}
	wg.Wait()
	res := clientResult{Rate: win.rate(), Count: done.Load(), Errors: failed.Load()}
	if s, ok := firstErr.Load().(string); ok {
		res.FirstError = s
	}
	if done.Load() == 0 {
		return res, fmt.Errorf("no query answered: %s", res.FirstError)
	}
	return res, nil
}

// holdFlows talks with the bench over stdin/stdout: it says "ready", waits
// for a line, opens n connections (one byte each way on each, so every
// flow has carried data), says "opened K" (K of them open), and holds them
// until stdin ends.
func holdFlows(addr string, n int) error {
	in := bufio.NewReader(os.Stdin)
	fmt.Println("ready")
	if _, err := in.ReadString('\n'); err != nil {
		return fmt.Errorf("wait for the bench: %w", err)
	}
	conns := make([]net.Conn, n)
	var failed atomic.Int64
	var firstErr atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err == nil {
					var b [1]byte
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err = c.Write([]byte{'x'}); err == nil {
						_, err = io.ReadFull(c, b[:])
					}
					c.SetDeadline(time.Time{})
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	// A few failed dials (a loaded machine) still leave a measurement;
	// the bench divides by the flows actually open.
	if f := failed.Load(); f > int64(n/2) {
		return fmt.Errorf("%d of %d connections failed, first: %v", f, n, firstErr.Load())
	} else if f > 0 {
		fmt.Fprintf(os.Stderr, "bench client hold: %d of %d connections failed, first: %v\n", f, n, firstErr.Load())
	}
	fmt.Printf("opened %d\n", int64(n)-failed.Load())
	io.Copy(io.Discard, in)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	return nil
}

// firstByte reports when main started and, with addr, when the first byte
// from the server arrived.
func firstByte(start time.Time, addr string) (clientResult, error) {
	res := clientResult{StartNS: start.UnixNano()}
	if addr == "" {
		return res, nil
	}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return res, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	var b [1]byte
	if _, err := c.Write([]byte{'x'}); err != nil {
		return res, err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return res, err
	}
	res.FirstByteNS = time.Now().UnixNano()
	return res, nil
}
