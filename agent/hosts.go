package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// hostsTable is the pod's /etc/hosts: names to addresses and, for PTR
// queries, reverse names to the first name of each address.
type hostsTable struct {
	byName map[string][]netip.Addr // key: lower-case FQDN with trailing dot
	byAddr map[string]string       // key: reverse name ("4.3.2.1.in-addr.arpa.")
}

func parseHosts(b []byte) hostsTable {
	t := hostsTable{byName: map[string][]netip.Addr{}, byAddr: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil || a.Zone() != "" {
			continue
		}
		a = a.Unmap()
		for _, name := range f[1:] {
			fq := dns.CanonicalName(name)
			if _, ok := dns.IsDomainName(fq); !ok {
				continue
			}
			if !containsAddr(t.byName[fq], a) {
				t.byName[fq] = append(t.byName[fq], a)
			}
		}
		if rev, err := dns.ReverseAddr(a.String()); err == nil {
			if _, seen := t.byAddr[rev]; !seen {
				t.byAddr[rev] = dns.Fqdn(f[1])
			}
		}
	}
	return t
}

func containsAddr(l []netip.Addr, a netip.Addr) bool {
	for _, x := range l {
		if x == a {
			return true
		}
	}
	return false
}

// hostsFile re-reads the file when it changes (kubelet rewrites a pod's
// /etc/hosts for hostAliases), checking at most once per second.
type hostsFile struct {
	path string

	mu      sync.Mutex
	checked time.Time
	modTime time.Time
	size    int64
	table   hostsTable
}

func (h *hostsFile) get() (hostsTable, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.table.byName != nil && time.Since(h.checked) < time.Second {
		return h.table, nil
	}
	h.checked = time.Now()
	fi, err := os.Stat(h.path)
	if err != nil {
		// A file read before stays in use (see resolvConfFile.lastGood:
		// the target container restarted); one never read is empty.
		if h.table.byName != nil {
			return h.table, nil
		}
		if os.IsNotExist(err) {
			h.table = parseHosts(nil)
			return h.table, nil
		}
		return hostsTable{}, fmt.Errorf("stat hosts file: %w", err)
	}
	if h.table.byName != nil && fi.ModTime().Equal(h.modTime) && fi.Size() == h.size {
		return h.table, nil
	}
	b, err := os.ReadFile(h.path)
	if err != nil {
		if h.table.byName != nil {
			return h.table, nil
		}
		return hostsTable{}, fmt.Errorf("read hosts file: %w", err)
	}
	h.table, h.modTime, h.size = parseHosts(b), fi.ModTime(), fi.Size()
	return h.table, nil
}
