package router

import (
	"net/netip"
	"sync"
	"time"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// minNameLifetime keeps an address→name mapping at least this long after the
// answer, whatever its TTL: resolvers in apps (Java, Go, glibc nscd) often
// cache answers beyond their TTL, and the flow must still be recognised.
const minNameLifetime = 10 * time.Minute

// nameTable remembers which DNS name the sandbox's DNS server answered with
// which address, and on which side it was resolved.
type nameTable struct {
	mu      sync.RWMutex
	entries map[netip.Addr]nameEntry
}

type nameEntry struct {
	name    string
	side    policy.Route
	expires time.Time
}

func newNameTable() *nameTable { return &nameTable{entries: map[netip.Addr]nameEntry{}} }

func (t *nameTable) record(addr netip.Addr, name string, side policy.Route, ttl time.Duration) {
	if ttl < minNameLifetime {
		ttl = minNameLifetime
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.entries[addr.Unmap()] = nameEntry{name: name, side: side, expires: now.Add(ttl)}
	// Sweep a little on every write so the table stays bounded by live answers.
	n := 0
	for a, e := range t.entries {
		if n++; n > 8 {
			break
		}
		if now.After(e.expires) {
			delete(t.entries, a)
		}
	}
}

func (t *nameTable) lookup(addr netip.Addr) (nameEntry, bool) {
	t.mu.RLock()
	e, ok := t.entries[addr.Unmap()]
	t.mu.RUnlock()
	if !ok || time.Now().After(e.expires) {
		return nameEntry{}, false
	}
	return e, true
}
