package netns

import (
	"fmt"
	"os"
	"strings"
)

// The functions here serve a process that lives wholly inside the sandbox's
// namespace (the rootless run's holder, which cannot be entered with setns
// from the host's user namespace), and its parent, which reads the
// namespace through the holder's /proc entry.

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

// ListeningPortsOf is ListeningPorts for the namespace of process pid,
// read from /proc/PID/net: no setns, so a process outside the namespace's
// user namespace may call it for a process of its own user.
func ListeningPortsOf(pid int) (tcp, udp map[uint16]bool, err error) {
	tcp, udp = map[uint16]bool{}, map[uint16]bool{}
	if err := readProcNet(fmt.Sprintf("/proc/%d/net/", pid), tcp, udp); err != nil {
		return nil, nil, fmt.Errorf("listening ports of pid %d: %w", pid, err)
	}
	return tcp, udp, nil
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
