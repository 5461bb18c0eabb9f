package nat

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Agents in one pod each write their own redirect rules, and a port's
// newer redirect silently takes its connections from the older one. So
// an agent asks the others, over their liveness sockets, who holds a port
// before it redirects it, and refuses with the holder's name instead.

// Holders is what an agent tells other agents: per port it redirects,
// who subscribed to it (the clients' labels, "alice@laptop (steal)").
type Holders map[uint16][]string

// Answers to another agent are bounded, like everything a peer sends.
const (
	maxHoldersAnswer  = 64 << 10
	maxLabelsPerPort  = 16
	holdersAskTimeout = time.Second
)

// HoldLiveness binds the agent's abstract socket for its life. Every
// connection tells the caller the agent is alive; a caller running as
// root or as the agent's own user also reads holders' answer (nil: none).
// Others (the pod's app, as another user) learn only that it is alive.
func HoldLiveness(id string, holders func() Holders) (net.Listener, error) {
	ln, err := net.Listen("unix", livenessPrefix+id)
	if err != nil {
		return nil, fmt.Errorf("bind the agent's liveness socket %s: %w", livenessPrefix+id, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go answerLiveness(c.(*net.UnixConn), holders)
		}
	}()
	return ln, nil
}

func answerLiveness(c *net.UnixConn, holders func() Holders) {
	defer c.Close()
	if holders == nil || !trustedPeer(c) {
		return
	}
	h := holders()
	if h == nil {
		h = Holders{}
	}
	b, err := json.Marshal(boundHolders(h))
	if err != nil || len(b) > maxHoldersAnswer {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(holdersAskTimeout))
	_, _ = c.Write(append(b, '\n'))
}

// trustedPeer: root or our own user, as another agent is.
func trustedPeer(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == 0 || cred.Uid == uint32(os.Geteuid())
}

func boundHolders(h Holders) Holders {
	out := Holders{}
	for port, labels := range h {
		if len(labels) > maxLabelsPerPort {
			labels = labels[:maxLabelsPerPort]
		}
		bounded := make([]string, 0, len(labels))
		for _, l := range labels {
			if len(l) > 256 {
				l = l[:256]
			}
			bounded = append(bounded, l)
		}
		out[port] = bounded
	}
	return out
}

// OtherHolders asks every other live agent in this network namespace who
// holds port, and returns them as "LABEL (agent ID)". Agents that do not
// answer in time, or answer garbage, are skipped and reported in err
// beside whatever the others said.
func OtherHolders(self string, port uint16) ([]string, error) {
	ids, err := liveAgentIDs()
	if err != nil {
		return nil, err
	}
	var held []string
	var errs []error
	for _, id := range ids {
		if id == self {
			continue
		}
		h, err := askHolders(id)
		if err != nil {
			errs = append(errs, fmt.Errorf("agent %s: %w", id, err))
			continue
		}
		for _, label := range h[port] {
			held = append(held, fmt.Sprintf("%s (agent %s)", label, id))
		}
	}
	return held, errors.Join(errs...)
}

func askHolders(id string) (Holders, error) {
	c, err := net.DialTimeout("unix", livenessPrefix+id, holdersAskTimeout)
	if err != nil {
		if nobodyThere(err) {
			return nil, nil // gone since it was listed
		}
		return nil, err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(holdersAskTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxHoldersAnswer+1), 4096).ReadBytes('\n')
	if err == io.EOF && len(line) == 0 {
		return nil, nil // an agent that says only that it is alive
	}
	if err != nil {
		return nil, fmt.Errorf("read its answer: %w", err)
	}
	var h Holders
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, fmt.Errorf("its answer is not a list of holders: %w", err)
	}
	return h, nil
}

// liveAgentIDs lists the agents' liveness sockets in this network
// namespace, from /proc/net/unix (abstract names start with "@").
func liveAgentIDs() ([]string, error) {
	f, err := os.Open("/proc/self/net/unix")
	if err != nil {
		return nil, fmt.Errorf("list unix sockets: %w", err)
	}
	defer f.Close()
	return parseAgentIDs(f)
}

func parseAgentIDs(r io.Reader) ([]string, error) {
	var ids []string
	sc := bufio.NewScanner(io.LimitReader(r, 64<<20))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		id, ok := strings.CutPrefix(fields[7], livenessPrefix)
		if !ok || id == "" || slices.Contains(ids, id) {
			continue
		}
		ids = append(ids, id)
	}
	return ids, sc.Err()
}
