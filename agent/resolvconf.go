package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// resolvConf is what the agent takes from the pod's /etc/resolv.conf.
type resolvConf struct {
	Nameservers []netip.AddrPort
	Search      []string
	Ndots       int
	// Options are the options other than ndots, as written.
	Options  []string
	Timeout  time.Duration // per attempt at one nameserver
	Attempts int
}

// Defaults from resolv.conf(5).
const (
	defaultNdots       = 1
	defaultDNSTimeout  = 5 * time.Second
	defaultDNSAttempts = 2
	maxNdots           = 15
	// glibc's limits (resolv.h): MAXNS, RES_MAXRETRANS, RES_MAXRETRY. The
	// pod's file is the pod's to write: what it says is bounded here.
	maxNameservers = 3
	maxDNSTimeout  = 30
	maxDNSAttempts = 5
	// maxSearch bounds the search list (glibc has none since 2.26; a list
	// longer than this is nobody's configuration).
	maxSearch = 32
	// maxResolvConf bounds the file read.
	maxResolvConf = 64 << 10
)

func readResolvConf(path string) (resolvConf, error) {
	f, err := os.Open(path)
	if err != nil {
		return resolvConf{}, fmt.Errorf("read resolv.conf: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxResolvConf))
	if err != nil {
		return resolvConf{}, fmt.Errorf("read resolv.conf: %w", err)
	}
	return parseResolvConf(b), nil
}

// resolvConfFile re-reads the pod's resolv.conf when it changes, checking
// at most once per second, as hostsFile does: read afresh for every query,
// it took a tenth of the agent's time per query.
type resolvConfFile struct {
	path string

	mu      sync.Mutex
	loaded  bool
	checked time.Time
	modTime time.Time
	size    int64
	rc      resolvConf
}

func (f *resolvConfFile) get() (resolvConf, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loaded && time.Since(f.checked) < time.Second {
		return f.rc, nil
	}
	fi, err := os.Stat(f.path)
	if err != nil {
		return f.lastGood(fmt.Errorf("read resolv.conf: %w", err))
	}
	f.checked = time.Now()
	if f.loaded && fi.ModTime().Equal(f.modTime) && fi.Size() == f.size {
		return f.rc, nil
	}
	rc, err := readResolvConf(f.path)
	if err != nil {
		return f.lastGood(err)
	}
	f.rc, f.modTime, f.size, f.loaded = rc, fi.ModTime(), fi.Size(), true
	return rc, nil
}

// lastGood answers a failed read with the last file read, when there was
// one. In Job mode the path is /proc/PID/root/etc/resolv.conf of the
// target container's process: when the container restarts, that process
// is gone, while the pod (its network namespace, its resolver settings)
// stays; every query failing from then on would be worse than answering
// with what the pod had.
func (f *resolvConfFile) lastGood(err error) (resolvConf, error) {
	if !f.loaded {
		return resolvConf{}, err
	}
	f.checked = time.Now()
	return f.rc, nil
}

// parseResolvConf reads resolv.conf the way glibc does: unknown lines are
// ignored, the last search/domain line wins, bad option values fall back
// to the defaults.
func parseResolvConf(b []byte) resolvConf {
	rc := resolvConf{Ndots: defaultNdots, Timeout: defaultDNSTimeout, Attempts: defaultDNSAttempts}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) < 2 {
				continue
			}
			// A scoped IPv6 nameserver (fe80::1%eth0) keeps its zone.
			if a, err := netip.ParseAddr(f[1]); err == nil && len(rc.Nameservers) < maxNameservers {
				rc.Nameservers = append(rc.Nameservers, netip.AddrPortFrom(a, 53))
			}
		case "search":
			rc.Search = trimDots(f[1:min(len(f), 1+maxSearch)])
		case "domain":
			if len(f) > 1 {
				rc.Search = trimDots(f[1:2])
			}
		case "options":
			for _, o := range f[1:] {
				name, val, hasVal := strings.Cut(o, ":")
				n, nerr := strconv.Atoi(val)
				switch {
				case name == "ndots" && hasVal:
					if nerr == nil && n >= 0 {
						rc.Ndots = min(n, maxNdots)
					}
					continue
				case name == "timeout" && hasVal && nerr == nil && n > 0:
					rc.Timeout = time.Duration(min(n, maxDNSTimeout)) * time.Second
				case name == "attempts" && hasVal && nerr == nil && n > 0:
					rc.Attempts = min(n, maxDNSAttempts)
				}
				if len(rc.Options) >= maxSearch {
					continue
				}
				rc.Options = append(rc.Options, o)
			}
		}
	}
	return rc
}

func trimDots(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if n = strings.TrimSuffix(n, "."); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// servers returns the nameservers as dialable host:port strings.
func (rc resolvConf) servers() []string {
	out := make([]string, len(rc.Nameservers))
	for i, ns := range rc.Nameservers {
		out[i] = net.JoinHostPort(ns.Addr().String(), strconv.Itoa(int(ns.Port())))
	}
	return out
}
