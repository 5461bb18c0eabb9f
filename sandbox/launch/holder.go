package launch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/moby/sys/capability"
	"golang.org/x/sys/unix"

	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/synqueue"
)

// A rootless run cannot create a named network namespace, and Go cannot
// setns into a user namespace (the runtime is always multi-threaded). So
// a holder process is started in new user and network namespaces (the
// user's own uid and gid mapped to themselves, every capability of the new
// user namespace kept as ambient): it sets the sandbox's network up,
// hands the TUN back, creates sockets inside on request, and starts the
// app (through the init helper, as a root run does). Its parent, the
// router, stays in the host's namespaces and dials local flows from there.
//
//	trafficpolice (host netns, uid U) ── TUN fd, sockets ──┐
//	  └─ holder (userns U→U, netns, ambient caps) ─────────┘
//	       └─ init → app (uid U, no capabilities)
//
// The holder exits with the app's status (128+N for signal N), so its
// exec.Cmd stands for the app in the parent; signals sent to it are passed
// on to the app.

// holderArg0 is the argv[0] that turns this binary into the holder.
const holderArg0 = "trafficpolice-sandbox-holder"

// holderCtlFD is the holder's end of its control socket.
const holderCtlFD = 3

// HolderSpec says how to start a holder.
type HolderSpec struct {
	// Link is the sandbox's TUN link.
	Link netns.SandboxLink
	// Stdin, Stdout and Stderr are the app's, as in Spec.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Holder is a running holder process.
type Holder struct {
	cmd *exec.Cmd
	ctl *net.UnixConn
	id  netns.ID

	mu       sync.Mutex // one request at a time on ctl, and buf
	buf      []byte     // the reply's buffer, reused: a call per dial
	handed   bool       // StartApp gave cmd to the caller, who waits for it
	closeOne sync.Once
}

// holderRequest is one message to the holder; a file travels beside it
// for "start" (a pipe with the payload).
type holderRequest struct {
	Op string `json:"op"` // setup, socket, bypass, listening, start, synqueue, listen, synrules

	Link *netns.SandboxLink `json:"link,omitempty"` // setup

	Family int `json:"family,omitempty"` // socket
	Type   int `json:"type,omitempty"`

	Add   bool   `json:"add,omitempty"` // bypass
	Proto string `json:"proto,omitempty"`
	Port  uint16 `json:"port,omitempty"`

	Terminal bool `json:"terminal,omitempty"` // start

	Queue uint16          `json:"queue,omitempty"` // synqueue
	Rules *synqueue.Rules `json:"rules,omitempty"` // synrules
	// listen: Proto (tcp4 or tcp6) and Port
}

// holderReply answers a request; a file travels beside it for "setup"
// (the TUN) and "socket".
type holderReply struct {
	Err        string      `json:"err,omitempty"`
	StartError *StartError `json:"start_error,omitempty"`
	// The listening ports (listening), as bitmaps: bounded whatever the
	// app listens on (8 KiB each).
	TCPPorts []byte `json:"tcp_ports,omitempty"`
	UDPPorts []byte `json:"udp_ports,omitempty"`
}

// maxHolderMessage bounds one control message (the payload goes through
// a pipe, so requests and replies are small).
const maxHolderMessage = 64 << 10

// StartHolder starts a holder and sets the sandbox up in it; it returns
// the holder and the TUN (as netns.SetupSandbox does). Close the holder
// when done with it; the namespaces go with its processes.
func StartHolder(hs HolderSpec) (h *Holder, tun *os.File, err error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("holder control socket: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "holder-ctl"), os.NewFile(uintptr(pair[1]), "holder-ctl")
	defer theirs.Close()
	fc, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("holder control socket: %w", err)
	}
	h = &Holder{ctl: fc.(*net.UnixConn)}

	attr, err := UserNamespaceAttr()
	if err != nil {
		h.ctl.Close()
		return nil, nil, err
	}
	attr.Pdeathsig = syscall.SIGKILL
	attr.Setpgid = true
	h.cmd = &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{holderArg0},
		Stdin:       hs.Stdin,
		Stdout:      hs.Stdout,
		Stderr:      hs.Stderr,
		ExtraFiles:  []*os.File{theirs},
		SysProcAttr: attr,
	}
	if err := h.cmd.Start(); err != nil {
		h.ctl.Close()
		return nil, nil, fmt.Errorf("start the rootless sandbox's holder: %w", userNamespaceHint(err))
	}
	started := h // the named result is nil on the error returns below
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	if h.id, err = netns.IDOf(h.NetnsPath()); err != nil {
		return nil, nil, fmt.Errorf("the rootless sandbox's namespace: %w", err)
	}
	link := hs.Link
	tun, err = h.call(holderRequest{Op: "setup", Link: &link}, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("set up the rootless sandbox: %w", err)
	}
	if tun == nil {
		return nil, nil, errors.New("set up the rootless sandbox: the holder sent no TUN")
	}
	if err := unix.SetNonblock(int(tun.Fd()), true); err != nil {
		tun.Close()
		return nil, nil, fmt.Errorf("TUN descriptor: %w", err)
	}
	// Fd switched the file to blocking mode; a fresh file of a
	// non-blocking descriptor goes to Go's poller again.
	fd, err := unix.FcntlInt(tun.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	tun.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("TUN descriptor: %w", err)
	}
	return h, os.NewFile(uintptr(fd), "tun"), nil
}

// UserNamespaceAttr is how a rootless run's holder is started (and what
// preflight tries): new user and network namespaces, the user's own uid
// and gid mapped to themselves (the app sees who it is: postgres and
// friends refuse to run as root), and every capability of the new user
// namespace as an ambient one — capabilities there only: the process
// configures the namespaces it owns and nothing of the host's.
func UserNamespaceAttr() (*syscall.SysProcAttr, error) {
	supported, err := capability.ListSupported()
	if err != nil {
		return nil, fmt.Errorf("list the kernel's capabilities: %w", err)
	}
	ambient := make([]uintptr, len(supported))
	for i, c := range supported {
		ambient[i] = uintptr(c)
	}
	uid, gid := os.Geteuid(), os.Getegid()
	return &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		GidMappingsEnableSetgroups: false,
		AmbientCaps:                ambient,
	}, nil
}

// userNamespaceHint adds to err what to do when the kernel refused to
// create the user namespace.
func userNamespaceHint(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%w (the kernel did not let this user create a user namespace: run `trafficpolice doctor` for the reason and the fix, or run with sudo)", err)
	}
	return err
}

// Pid is the holder's process ID.
func (h *Holder) Pid() int { return h.cmd.Process.Pid }

func (h *Holder) String() string { return fmt.Sprintf("rootless sandbox (holder pid %d)", h.Pid()) }

// NetnsPath is the sandbox's network namespace, as the holder's /proc
// entry.
func (h *Holder) NetnsPath() string { return fmt.Sprintf("/proc/%d/ns/net", h.Pid()) }

// NetnsID identifies the sandbox's network namespace.
func (h *Holder) NetnsID() netns.ID { return h.id }

// call sends req (with file, if any) and waits for the reply and the
// file that may come with it.
func (h *Holder) call(req holderRequest, file *os.File) (*os.File, error) {
	_, got, err := h.exchange(req, file)
	return got, err
}

// exchange is call, returning the reply too.
func (h *Holder) exchange(req holderRequest, file *os.File) (holderReply, *os.File, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	body, err := json.Marshal(req)
	if err != nil {
		return holderReply{}, nil, err
	}
	var oob []byte
	if file != nil {
		oob = unix.UnixRights(int(file.Fd()))
	}
	if _, _, err := h.ctl.WriteMsgUnix(body, oob, nil); err != nil {
		return holderReply{}, nil, fmt.Errorf("holder %s: %w", req.Op, err)
	}
	var rep holderReply
	if h.buf == nil {
		h.buf = make([]byte, maxHolderMessage)
	}
	got, err := readHolderMessage(h.ctl, h.buf, &rep)
	if err != nil {
		return holderReply{}, nil, fmt.Errorf("holder %s: %w", req.Op, err)
	}
	if rep.StartError != nil {
		if got != nil {
			got.Close()
		}
		return rep, nil, rep.StartError
	}
	if rep.Err != "" {
		if got != nil {
			got.Close()
		}
		return rep, nil, errors.New(rep.Err)
	}
	return rep, got, nil
}

// readHolderMessage reads one message into v, through buf (of
// maxHolderMessage bytes), and the descriptor that came with it, if any.
func readHolderMessage(c *net.UnixConn, buf []byte, v any) (*os.File, error) {
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	if n == 0 && oobn == 0 {
		return nil, io.EOF
	}
	var file *os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, fmt.Errorf("control message: %w", err)
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				if file == nil {
					unix.CloseOnExec(fd)
					file = os.NewFile(uintptr(fd), "from-holder")
				} else {
					unix.Close(fd) // one descriptor per message, never more
				}
			}
		}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		if file != nil {
			file.Close()
		}
		return nil, fmt.Errorf("message over %d bytes", maxHolderMessage)
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		if file != nil {
			file.Close()
		}
		return nil, fmt.Errorf("decode: %w", err)
	}
	return file, nil
}

// Dial connects from inside the sandbox, as netns.DialInside does: the
// holder makes the socket there (marked RouterMark), this process connects
// it. address must be a literal IP:port.
func (h *Holder) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial inside %s: address %q is invalid: want a literal IP:port such as 127.0.0.1:8080", h, address)
	}
	req := holderRequest{Op: "socket", Family: unix.AF_INET6, Type: unix.SOCK_STREAM}
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if ap.Addr().Unmap().Is4() {
		req.Family = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	case "udp", "udp4", "udp6":
		req.Type = unix.SOCK_DGRAM
	default:
		return nil, fmt.Errorf("dial inside %s: network %q is invalid: want tcp, tcp4, tcp6, udp, udp4 or udp6", h, network)
	}
	f, err := h.call(req, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s inside %s: %w", network, address, h, err)
	}
	if f == nil {
		return nil, fmt.Errorf("dial %s %s inside %s: the holder sent no socket", network, address, h)
	}
	defer f.Close()
	if err := connectFile(ctx, f, sa); err != nil {
		return nil, fmt.Errorf("dial %s %s inside %s: %w", network, address, h, err)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s inside %s: %w", network, address, h, err)
	}
	return c, nil
}

// connectFile connects the non-blocking socket f to sa, waiting through
// Go's poller, bounded by ctx.
func connectFile(ctx context.Context, f *os.File, sa unix.Sockaddr) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return err
	}
	if cerr == nil {
		return nil
	}
	if !errors.Is(cerr, unix.EINPROGRESS) {
		return os.NewSyscallError("connect", cerr)
	}
	if dl, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	var soErr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			soErr = err
			return true
		}
		if v != 0 {
			soErr = unix.Errno(v)
			return true
		}
		if _, err := unix.Getpeername(int(fd)); err == nil {
			return true
		}
		return false // still connecting: wait until writable
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if werr != nil {
		return werr
	}
	if soErr != nil {
		return os.NewSyscallError("connect", soErr)
	}
	f.SetWriteDeadline(time.Time{})
	return nil
}

// ListeningPorts is netns.ListeningPorts for the sandbox: the holder asks
// its namespace's sock_diag (cheap, where the /proc/PID/net tables walk
// every bucket of the host's socket hash).
func (h *Holder) ListeningPorts() (tcp, udp map[uint16]bool, err error) {
	rep, _, err := h.exchange(holderRequest{Op: "listening"}, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("listening ports in %s: %w", h, err)
	}
	return portsFromBitmap(rep.TCPPorts), portsFromBitmap(rep.UDPPorts), nil
}

// portBitmap is the ports as a bitmap of 65536 bits; portsFromBitmap reads
// it back (a short one lacks the high ports).
func portBitmap(ports map[uint16]bool) []byte {
	b := make([]byte, 1<<16/8)
	for p := range ports {
		b[p/8] |= 1 << (p % 8)
	}
	return b
}

func portsFromBitmap(b []byte) map[uint16]bool {
	ports := map[uint16]bool{}
	for i, x := range b[:min(len(b), 1<<16/8)] {
		for bit := range 8 {
			if x&(1<<bit) != 0 {
				ports[uint16(i*8+bit)] = true
			}
		}
	}
	return ports
}

// ListenerBypass adds or removes a listener bypass (netns.AddListenerBypass)
// in the sandbox.
func (h *Holder) ListenerBypass(add bool, proto string, port uint16) error {
	_, err := h.call(holderRequest{Op: "bypass", Add: add, Proto: proto, Port: port}, nil)
	return err
}

// SYNQueue binds SYN queue num inside the sandbox and returns it: only a
// process inside the sandbox's user namespace may bind it (the holder),
// and the queue stays bound to the socket it hands over.
func (h *Holder) SYNQueue(num uint16) (*synqueue.Queue, error) {
	f, err := h.call(holderRequest{Op: "synqueue", Queue: num}, nil)
	if err != nil {
		return nil, fmt.Errorf("SYN queue in %s: %w", h, err)
	}
	if f == nil {
		return nil, fmt.Errorf("SYN queue in %s: the holder sent no socket", h)
	}
	return synqueue.FromFile(f, num, h.String())
}

// ListenLoopback returns a TCP listener inside the sandbox on its loopback
// address of network's family (tcp4: 127.0.0.1, tcp6: ::1) and port (0:
// any free one).
func (h *Holder) ListenLoopback(network string, port uint16) (*net.TCPListener, error) {
	f, err := h.call(holderRequest{Op: "listen", Proto: network, Port: port}, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on %s loopback port %d inside %s: %w", network, port, h, err)
	}
	if f == nil {
		return nil, fmt.Errorf("listen inside %s: the holder sent no socket", h)
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen inside %s: %w", h, err)
	}
	return ln.(*net.TCPListener), nil
}

// InstallSYNRules adds r (synqueue.Rules.Install) inside the sandbox.
func (h *Holder) InstallSYNRules(r synqueue.Rules) error {
	_, err := h.call(holderRequest{Op: "synrules", Rules: &r}, nil)
	return err
}

// StartApp starts the app in the sandbox as Start does, and returns the
// holder's command, which stands for the app from now on: it exits with
// the app's status, and passes on the signals it gets. Spec.NetnsPath is
// ignored; Spec.Stdin, Stdout and Stderr are the holder's (HolderSpec);
// Spec.UID and GID must be nil: the app runs as this user.
func (h *Holder) StartApp(spec Spec) (*exec.Cmd, error) {
	if spec.UID != nil || spec.GID != nil {
		return nil, &StartError{Step: "spec", Msg: "a rootless app runs as the user who runs trafficpolice: Spec.UID and GID must be nil"}
	}
	spec.NetnsPath = h.NetnsPath()
	p, err := spec.payload()
	if err != nil {
		return nil, &StartError{Step: "spec", Msg: err.Error()}
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode init spec: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("holder spec pipe: %w", err)
	}
	// The payload may be larger than a pipe holds: write it meanwhile.
	go func() {
		w.Write(body)
		w.Close()
	}()
	_, err = h.call(holderRequest{Op: "start", Terminal: spec.Terminal != nil}, r)
	r.Close()
	if err != nil {
		var se *StartError
		if errors.As(err, &se) {
			return nil, se
		}
		return nil, &StartError{Step: "init", Msg: err.Error()}
	}
	h.mu.Lock()
	h.handed = true
	h.mu.Unlock()
	return h.cmd, nil
}

// Close ends the holder (and with it the app and the namespaces, unless
// processes the app left behind hold them: netns.KillProcessesIn those).
// After StartApp, the caller waits for the command; before, Close does.
func (h *Holder) Close() error {
	h.closeOne.Do(func() {
		h.ctl.Close()
		h.cmd.Process.Kill()
		h.mu.Lock()
		handed := h.handed
		h.mu.Unlock()
		if !handed {
			h.cmd.Wait()
		}
	})
	return nil
}
