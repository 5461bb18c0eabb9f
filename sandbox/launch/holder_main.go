package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/synqueue"
)

// runHolder is the holder's main (see holder.go); it never returns.
func runHolder() {
	f := os.NewFile(holderCtlFD, "holder-ctl")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "trafficpolice holder: control socket: %v\n", err)
		os.Exit(125)
	}
	ctl := fc.(*net.UnixConn)
	// Signals for the app: the parent passes Ctrl-C and friends on to us.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	hs := &holderState{ctl: ctl, exited: make(chan int, 1)}
	go hs.serve()
	for {
		select {
		case sig := <-sigs:
			if app := hs.app.Load(); app != nil {
				app.Signal(sig)
			} else {
				os.Exit(128 + int(sig.(syscall.Signal)))
			}
		case code := <-hs.exited:
			os.Exit(code)
		}
	}
}

type holderState struct {
	ctl    *net.UnixConn
	app    atomic.Pointer[os.Process]
	exited chan int
}

// serve answers the parent's requests until the control socket closes
// (the parent is gone, or done with us): then the holder exits, and the
// app with it (its parent-death signal).
func (hs *holderState) serve() {
	var tun *os.File
	buf := make([]byte, maxHolderMessage)
	for {
		var req holderRequest
		file, err := readHolderMessage(hs.ctl, buf, &req)
		if err != nil {
			if app := hs.app.Load(); app != nil {
				app.Kill()
			}
			os.Exit(125)
		}
		var rep holderReply
		var out *os.File
		switch req.Op {
		case "setup":
			if tun != nil || req.Link == nil {
				rep.Err = "setup: already done, or no link given"
				break
			}
			tun, err = netns.SetupHere(*req.Link)
			if err != nil {
				rep.Err = err.Error()
			}
			out = tun
		case "socket":
			out, err = markedSocket(req.Family, req.Type)
			if err != nil {
				rep.Err = err.Error()
			}
		case "bypass":
			if err := netns.ListenerBypassHere("(rootless)", req.Add, req.Proto, req.Port); err != nil {
				rep.Err = err.Error()
			}
		case "listening":
			tcp, udp, err := netns.ListeningPortsHere()
			if err != nil {
				rep.Err = err.Error()
				break
			}
			rep.TCPPorts, rep.UDPPorts = portBitmap(tcp), portBitmap(udp)
		case "synqueue":
			out, err = openSYNQueue(req.Queue)
			if err != nil {
				rep.Err = err.Error()
			}
		case "listen":
			out, err = listenLoopback(req.Proto, req.Port)
			if err != nil {
				rep.Err = err.Error()
			}
		case "synrules":
			if req.Rules == nil {
				rep.Err = "synrules: no rules given"
			} else if err := req.Rules.InstallHere(); err != nil {
				rep.Err = err.Error()
			}
		case "start":
			rep.StartError = hs.start(file, req.Terminal)
		default:
			rep.Err = fmt.Sprintf("unknown request %q", req.Op)
		}
		if file != nil {
			file.Close()
		}
		body, _ := json.Marshal(rep)
		var oob []byte
		if out != nil {
			oob = unix.UnixRights(int(out.Fd()))
		}
		_, _, werr := hs.ctl.WriteMsgUnix(body, oob, nil)
		if out != nil {
			// The TUN is the parent's now; the holder keeps no copy, so
			// the link goes when the parent closes it.
			out.Close()
		}
		if werr != nil {
			os.Exit(125)
		}
	}
}

// markedSocket makes a socket in this namespace that the loopback
// redirect lets through (netns.RouterMark).
func markedSocket(family, sotype int) (*os.File, error) {
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return nil, fmt.Errorf("socket: family %d is invalid", family)
	}
	if sotype != unix.SOCK_STREAM && sotype != unix.SOCK_DGRAM {
		return nil, fmt.Errorf("socket: type %d is invalid", sotype)
	}
	fd, err := unix.Socket(family, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, netns.RouterMark); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set SO_MARK %#x: %w", netns.RouterMark, err)
	}
	return os.NewFile(uintptr(fd), "socket"), nil
}

// start reads the init payload from the pipe and starts the app with
// the holder's own stdio.
func (hs *holderState) start(pipe *os.File, terminal bool) *StartError {
	if hs.app.Load() != nil {
		return &StartError{Step: "spec", Msg: "the app is started already"}
	}
	if pipe == nil {
		return &StartError{Step: "spec", Msg: "no payload pipe"}
	}
	body, err := io.ReadAll(io.LimitReader(pipe, 64<<20))
	if err != nil {
		return fail("spec", err, "read the spec from the parent")
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return fail("spec", err, "decode the spec from the parent")
	}
	p.ParentPID = os.Getpid()
	var tty *os.File
	if terminal {
		tty = os.Stdin
	}
	cmd, err := startPayload(&p, os.Stdin, os.Stdout, os.Stderr, tty)
	if err != nil {
		var se *StartError
		if errors.As(err, &se) {
			return se
		}
		return fail("init", err, "start the app")
	}
	hs.app.Store(cmd.Process)
	go func() {
		err := cmd.Wait()
		code := 125
		if st := cmd.ProcessState; st != nil {
			code = st.ExitCode()
			if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "trafficpolice holder: wait for the app: %v\n", err)
		}
		hs.exited <- code
	}()
	return nil
}

// openSYNQueue binds SYN queue num in this namespace and returns its
// socket; the holder keeps no copy.
func openSYNQueue(num uint16) (*os.File, error) {
	q, err := synqueue.Open(nil, synqueue.Config{Num: num})
	if err != nil {
		return nil, err
	}
	f, err := q.File()
	if cerr := q.Close(); err == nil && cerr != nil {
		f.Close()
		return nil, cerr
	}
	return f, err
}

// listenLoopback returns a TCP socket listening on this namespace's
// loopback (netns.ListenLoopbackHere).
func listenLoopback(network string, port uint16) (*os.File, error) {
	ln, err := netns.ListenLoopbackHere(network, port)
	if err != nil {
		return nil, err
	}
	defer ln.Close() // the parent gets a duplicate
	return ln.File()
}
