package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// The functions here serve a process that lives wholly inside the sandbox's
// namespace (the rootless run's holder, which cannot be entered with setns
// from the host's user namespace); its parent asks the holder.

// SetupHere is SetupSandbox for the namespace the whole calling process is
// in. Call it from a process that runs nothing else in this namespace yet.
func SetupHere(opts SandboxLink) (*os.File, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	tun, err := setupInside(opts)
	if err != nil {
		if tun != nil {
			tun.Close()
		}
		return nil, fmt.Errorf("set up the sandbox's namespace: %w", err)
	}
	return tun, nil
}

// ListenLoopbackHere listens for TCP in the calling thread's namespace on
// its loopback address of network's family (tcp4: 127.0.0.1, tcp6: ::1,
// IPv6 only) and port (0: any free one). The socket stays in this
// namespace. Connections it accepts get no keepalive from Go: they come
// from inside the same host, and four setsockopt calls each are not free.
func ListenLoopbackHere(network string, port uint16) (*net.TCPListener, error) {
	host := "127.0.0.1"
	switch network {
	case "tcp4":
	case "tcp6":
		host = "::1"
	default:
		return nil, fmt.Errorf("listen on loopback: network %q is invalid: want tcp4 or tcp6", network)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln.(*net.TCPListener), nil
}

// ListeningPortsHere is ListeningPorts for the calling thread's namespace
// (the holder's own).
func ListeningPortsHere() (tcp, udp map[uint16]bool, err error) {
	tcp, udp = map[uint16]bool{}, map[uint16]bool{}
	if err := listeningPortsHere(tcp, udp); err != nil {
		return nil, nil, fmt.Errorf("listening ports: %w", err)
	}
	return tcp, udp, nil
}

// listeningPortsHere asks sock_diag, or reads the /proc tables where the
// kernel has no inet_diag.
func listeningPortsHere(tcp, udp map[uint16]bool) error {
	if diagListeningPorts(tcp, udp) == nil {
		return nil
	}
	clear(tcp)
	clear(udp)
	return readProcNet("/proc/thread-self/net/", tcp, udp)
}

// readProcNet parses the four socket tables under dir (ending in "/").
func readProcNet(dir string, tcp, udp map[uint16]bool) error {
	for _, f := range []struct {
		file  string
		ports map[uint16]bool
		udp   bool
	}{
		{"tcp", tcp, false}, {"tcp6", tcp, false},
		{"udp", udp, true}, {"udp6", udp, true},
	} {
		path := dir + f.file
		fh, err := os.Open(path)
		if os.IsNotExist(err) && strings.HasSuffix(f.file, "6") {
			continue // kernel without IPv6
		}
		if err != nil {
			return err
		}
		err = parseProcNet(fh, f.udp, f.ports)
		fh.Close()
		if err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
	}
	return nil
}
