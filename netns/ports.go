package netns

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Socket states in /proc/net/{tcp,udp}[6] (include/net/tcp_states.h).
const (
	stateClose  = 0x07
	stateListen = 0x0A
)

// ListeningPorts returns the ports of the sandbox's listening TCP sockets
// and of its unconnected bound UDP sockets (servers, not clients), on any
// local address, IPv4 and IPv6.
func ListeningPorts(n *Namespace) (tcp, udp map[uint16]bool, err error) {
	tcp, udp = map[uint16]bool{}, map[uint16]bool{}
	// /proc/net is the reading process's namespace, /proc/thread-self/net
	// this thread's: the one we entered.
	err = n.Do(func() error { return listeningPortsHere(tcp, udp) })
	if err != nil {
		return nil, nil, fmt.Errorf("listening ports in netns %q: %w", n.name, err)
	}
	return tcp, udp, nil
}

// parseProcNet adds to ports the local port of every listening socket in a
// /proc/net/{tcp,udp}[6] table: state LISTEN for TCP; for UDP an
// unconnected socket (state CLOSE, remote port 0).
func parseProcNet(r io.Reader, udp bool, ports map[uint16]bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		local, remote, stateHex := fields[1], fields[2], fields[3]
		state, err := strconv.ParseUint(stateHex, 16, 8)
		if err != nil {
			return fmt.Errorf("state %q: %w", stateHex, err)
		}
		lport, err := hexPort(local)
		if err != nil {
			return err
		}
		if udp {
			rport, err := hexPort(remote)
			if err != nil {
				return err
			}
			if state != stateClose || rport != 0 || lport == 0 {
				continue
			}
		} else if state != stateListen || lport == 0 {
			continue
		}
		ports[lport] = true
	}
	return sc.Err()
}

// hexPort reads the port of "ADDRHEX:PORTHEX".
func hexPort(s string) (uint16, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return 0, fmt.Errorf("address %q: want ADDR:PORT in hex", s)
	}
	p, err := strconv.ParseUint(s[i+1:], 16, 16)
	if err != nil {
		return 0, fmt.Errorf("port in %q: %w", s, err)
	}
	return uint16(p), nil
}
