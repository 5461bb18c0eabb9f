package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/splice"
)

// The relay path is not a tool but a floor: the remote path's route through
// two plain relays, one on the host (where trafficpolice's router runs) and
// one in the pod namespace (where its agent runs). For TCP each accepts,
// dials the next hop and copies both ways with splice(2) (Go's io.Copy
// between TCP sockets); for UDP each passes datagrams on one system call
// at a time, through a socket per client. No TUN, no netstack, no
// multiplexing, no encryption. It is about the least a tool that carries an
// app's flows through a process of its own on each side (trafficpolice,
// mirrord, Telepresence) adds on this machine, measured beside the kernel
// in the same run as the remote rows (relays that batch datagrams could do
// better on UDP).

// relayPorts are the servers the relay path reaches: bulk TCP, echo,
// connect-and-close, UDP echo and DNS (relayed as datagrams: the cheapest way
// between the relays, where a tool's tunnel would carry them in a stream).
var relayPorts = []int{portBulk, portEcho, portCRR, portUDP, portDNS}

// relayPortOffset: relay 1 listens on the server's port plus this (the host
// side of the pod's veth), relay 2 on the same port at the pod's address.
const relayPortOffset = 20000

// relayMain is "bench relay [udp:]LISTEN=TO ...": it serves until stdin
// ends.
func relayMain(args []string) int {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "bench relay: want LISTEN=TO pairs (HOST:PORT each)")
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, pair := range fs.Args() {
		listen, to, ok := strings.Cut(pair, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "bench relay: %q is not LISTEN=TO\n", pair)
			return 2
		}
		if udp, isUDP := strings.CutPrefix(listen, "udp:"); isUDP {
			pc, err := net.ListenPacket("udp", udp)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
				return 1
			}
			context.AfterFunc(ctx, func() { pc.Close() })
			wg.Add(1)
			go func() {
				defer wg.Done()
				serveUDPRelay(pc.(*net.UDPConn), to)
			}()
			continue
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
			return 1
		}
		context.AfterFunc(ctx, func() { ln.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveRelay(ln, to)
		}()
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // the bench closes it to stop us
	cancel()
	wg.Wait()
	return 0
}

func serveRelay(ln net.Listener, to string) {
	var d net.Dialer
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			out, err := d.Dial("tcp", to)
			if err != nil {
				return
			}
			defer out.Close()
			done := make(chan struct{})
			go func() {
				relayOneWay(out.(*net.TCPConn), c.(*net.TCPConn))
				close(done)
			}()
			relayOneWay(c.(*net.TCPConn), out.(*net.TCPConn))
			<-done
		}()
	}
}

// serveUDPRelay passes each client's datagrams on through a socket of its
// own (so that the answers find their way back) and the answers back.
func serveUDPRelay(pc *net.UDPConn, to string) {
	var mu sync.Mutex
	upstream := map[netip.AddrPort]*net.UDPConn{}
	defer func() {
		mu.Lock()
		for _, c := range upstream {
			c.Close()
		}
		mu.Unlock()
	}()
	raddr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		return
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		mu.Lock()
		up := upstream[from]
		if up == nil {
			up, err = net.DialUDP("udp", nil, raddr)
			if err != nil {
				mu.Unlock()
				continue
			}
			upstream[from] = up
			go func() {
				back := make([]byte, 65536)
				for {
					n, err := up.Read(back)
					if err != nil {
						return
					}
					_, _ = pc.WriteToUDPAddrPort(back[:n], from)
				}
			}()
		}
		mu.Unlock()
		_, _ = up.Write(buf[:n])
	}
}

// relayOneWay copies src to dst (splice(2) between two TCP sockets) and
// passes the end on as a half-close.
func relayOneWay(dst, src *net.TCPConn) {
	if _, err := io.Copy(dst, src); err != nil && !errors.Is(err, net.ErrClosed) {
		splice.Abort(dst) // a reset stays a reset
		return
	}
	_ = dst.CloseWrite()
}

// relays are the relay path's two processes.
type relays struct {
	procs []*exec.Cmd
	ins   []io.WriteCloser
}

// startRelays starts relay 1 on the host and relay 2 in the pod namespace.
func (r *runner) startRelays(ctx context.Context) (*relays, error) {
	t := r.topo
	var hostPairs, podPairs []string
	for _, port := range relayPorts {
		at := func(a fmt.Stringer, p int) string { return net.JoinHostPort(a.String(), fmt.Sprint(p)) }
		proto := ""
		if port == portUDP || port == portDNS {
			proto = "udp:"
		}
		hostPairs = append(hostPairs, proto+at(t.podGW, port+relayPortOffset)+"="+at(t.podIP, port+relayPortOffset))
		podPairs = append(podPairs, proto+at(t.podIP, port+relayPortOffset)+"="+at(t.srvIP, port))
	}
	rl := &relays{}
	if err := rl.start(ctx, r.self, podPairs, nil, t.pod.Do); err != nil {
		rl.stop()
		return nil, err
	}
	if err := rl.start(ctx, r.self, hostPairs, nil, nil); err != nil {
		rl.stop()
		return nil, err
	}
	return rl, nil
}

// start runs one relay process serving pairs, in a namespace when do is
// set, and waits until it listens.
func (rl *relays) start(ctx context.Context, self string, pairs, env []string, do func(func() error) error) error {
	cmd := exec.CommandContext(ctx, self, append([]string{"relay"}, pairs...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = env
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if do != nil {
		err = do(cmd.Start)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return fmt.Errorf("start relay: %w", err)
	}
	rl.procs, rl.ins = append(rl.procs, cmd), append(rl.ins, in)
	line := make([]byte, 6)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "ready\n" {
		return fmt.Errorf("relay %s did not start (%q, %v)", strings.Join(pairs, " "), line, err)
	}
	return nil
}

func (rl *relays) stop() {
	for _, in := range rl.ins {
		in.Close()
	}
	for _, p := range rl.procs {
		_ = p.Wait()
	}
}

// relayArgs are a client's args with its server address replaced by relay
// 1's for the same server (offset relayPortOffset).
func (r *runner) relayArgs(args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] != "-addr" {
			continue
		}
		host, port, err := net.SplitHostPort(out[i+1])
		var p int
		if _, serr := fmt.Sscan(port, &p); err == nil && serr == nil && host == r.topo.srvIP.String() {
			out[i+1] = net.JoinHostPort(r.topo.podGW.String(), fmt.Sprint(p+relayPortOffset))
		}
	}
	return out
}
