package router

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/trafficpolice/trafficpolice/router/policy"
)

// minNameLifetime keeps an address→name mapping at least this long after the
// answer, whatever its TTL: resolvers in apps (Java, Go, glibc nscd) often
// cache answers beyond their TTL, and the flow must still be recognised.
const minNameLifetime = 10 * time.Minute

// maxAnswerNamesPerAddr bounds the names the app's own lookups attach to one
// address (a wildcard domain can give one address any number of names), so
// that a flow's lookup stays small. Rule names are never dropped for it.
const maxAnswerNamesPerAddr = 32

// nameSource says how a name came to stand for an address.
type nameSource uint8

const (
	// asked: the app asked the sandbox's DNS for the name.
	asked nameSource = iota
	// chained: the name is in the CNAME chain of such an answer.
	chained
	// ruled: a rule names it, and the router resolved it (ruleNames).
	ruled
)

// nameTable is the map from an address to every name it stands for: names
// the sandbox's DNS answered with it, and rule names the router resolved to
// it. A flow finds its destination's names with one map lookup.
type nameTable struct {
	mu     sync.RWMutex
	byAddr map[netip.Addr]*addrNames
	seq    uint64 // orders records: the higher, the more recent
	// onChange, if set, is called (outside the lock, before record
	// returns) when record changes the names an address stands for, with
	// the new names and when the first of them expires.
	onChange func(addr netip.Addr, names []string, until time.Time)
}

type nameKey struct {
	name   string
	source nameSource
}

type nameEntry struct {
	side    policy.Route // where the name was resolved
	seen    uint64       // nameTable.seq when last recorded
	expires time.Time
}

// addrNames are one address's names. view is rebuilt on every change, so a
// lookup before the first expiry returns it without allocating.
type addrNames struct {
	entries map[nameKey]nameEntry
	view    nameView
	// firstExpiry is the earliest expiry among entries: view is exact
	// until then.
	firstExpiry time.Time
}

// nameView is what a flow learns about its destination address.
type nameView struct {
	// host is the name the app most recently asked for and got the
	// address, and side where it was resolved; "" when it never asked.
	host string
	side policy.Route
	// names are all the address's names, sorted, without duplicates. The
	// slice is shared: read it, never change it.
	names []string
}

// logName is the name a flow's record gives its destination: the host the
// app asked for, or else one the address stands for (an IP literal to a
// rule's host).
func (v nameView) logName() string {
	if v.host == "" && len(v.names) > 0 {
		return v.names[0]
	}
	return v.host
}

func newNameTable() *nameTable { return &nameTable{byAddr: map[netip.Addr]*addrNames{}} }

// record says that name stands for addr until ttl (at least
// minNameLifetime) from now.
func (t *nameTable) record(addr netip.Addr, name string, side policy.Route, source nameSource, ttl time.Duration) {
	if ttl < minNameLifetime {
		ttl = minNameLifetime
	}
	addr = addr.Unmap()
	now := time.Now()
	t.mu.Lock()
	an := t.byAddr[addr]
	if an == nil {
		an = &addrNames{entries: map[nameKey]nameEntry{}}
		t.byAddr[addr] = an
	}
	before := an.view.names
	t.seq++
	an.entries[nameKey{name, source}] = nameEntry{side: side, seen: t.seq, expires: now.Add(ttl)}
	an.dropExpired(now)
	if source != ruled {
		an.capAnswerNames()
	}
	an.rebuild()
	t.sweep(now, addr)
	names, until := an.view.names, an.firstExpiry
	t.mu.Unlock()
	if t.onChange != nil && !slices.Equal(before, names) {
		t.onChange(addr, names, until)
	}
}

// sweep drops the expired names of a few other addresses, so the table
// stays bounded by live answers without a scan of its own.
func (t *nameTable) sweep(now time.Time, skip netip.Addr) {
	n := 0
	for a, an := range t.byAddr {
		if n++; n > 8 {
			return
		}
		if a == skip || now.Before(an.firstExpiry) {
			continue
		}
		an.dropExpired(now)
		if len(an.entries) == 0 {
			delete(t.byAddr, a)
			continue
		}
		an.rebuild()
	}
}

// lookup returns what addr's names are now.
func (t *nameTable) lookup(addr netip.Addr) nameView {
	addr = addr.Unmap()
	t.mu.RLock()
	defer t.mu.RUnlock()
	an := t.byAddr[addr]
	if an == nil {
		return nameView{}
	}
	now := time.Now()
	if now.Before(an.firstExpiry) {
		return an.view
	}
	return an.viewAt(now)
}

func (an *addrNames) dropExpired(now time.Time) {
	for k, e := range an.entries {
		if !now.Before(e.expires) {
			delete(an.entries, k)
		}
	}
}

// capAnswerNames drops the least recently seen names learned from the app's
// answers beyond maxAnswerNamesPerAddr.
func (an *addrNames) capAnswerNames() {
	for {
		var oldest nameKey
		var oldestSeen uint64
		n := 0
		for k, e := range an.entries {
			if k.source == ruled {
				continue
			}
			n++
			if n == 1 || e.seen < oldestSeen {
				oldest, oldestSeen = k, e.seen
			}
		}
		if n <= maxAnswerNamesPerAddr {
			return
		}
		delete(an.entries, oldest)
	}
}

func (an *addrNames) rebuild() {
	an.view = an.viewAt(time.Time{})
	an.firstExpiry = time.Time{}
	for _, e := range an.entries {
		if an.firstExpiry.IsZero() || e.expires.Before(an.firstExpiry) {
			an.firstExpiry = e.expires
		}
	}
}

// viewAt builds the view of the entries live at now (all of them for the
// zero time).
func (an *addrNames) viewAt(now time.Time) nameView {
	var v nameView
	var hostSeen uint64
	for k, e := range an.entries {
		if !now.IsZero() && !now.Before(e.expires) {
			continue
		}
		v.names = append(v.names, k.name)
		if k.source == asked && (v.host == "" || e.seen > hostSeen) {
			v.host, v.side, hostSeen = k.name, e.side, e.seen
		}
	}
	slices.Sort(v.names)
	v.names = slices.Compact(v.names)
	return v
}
