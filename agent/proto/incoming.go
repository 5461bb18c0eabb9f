package proto

import (
	"fmt"
	"math"
	"net/netip"
	"time"
)

// IncomingMode says what a subscription does with a pod port's traffic.
type IncomingMode uint8

// The incoming modes; the numbers are the wire values.
const (
	// ModeSteal: connections (or matching HTTP requests) go to the client
	// instead of the pod's app.
	ModeSteal IncomingMode = 1
	// ModeMirror: the pod's app answers as before; the client gets a copy.
	ModeMirror IncomingMode = 2
)

func (m IncomingMode) String() string {
	switch m {
	case ModeSteal:
		return "steal"
	case ModeMirror:
		return "mirror"
	}
	return fmt.Sprintf("IncomingMode(%d)", uint8(m))
}

// FilterKind is the kind of one node of an HTTP filter.
type FilterKind uint8

// The filter kinds; the numbers are the wire values.
const (
	// FilterNone: no filter, whole connections.
	FilterNone FilterKind = 0
	// FilterHeader: Pattern is a regular expression matched, case
	// insensitively, against each "Name: Value" header line.
	FilterHeader FilterKind = 1
	// FilterPath: Pattern is a regular expression matched against the
	// request's path (without the query).
	FilterPath FilterKind = 2
	// FilterMethod: Pattern is a method name, compared case-insensitively.
	FilterMethod FilterKind = 3
	// FilterAllOf: every filter in Filters matches.
	FilterAllOf FilterKind = 4
	// FilterAnyOf: at least one filter in Filters matches.
	FilterAnyOf   FilterKind = 5
	maxFilterKind            = FilterAnyOf
)

func (k FilterKind) String() string {
	switch k {
	case FilterNone:
		return "none"
	case FilterHeader:
		return "header"
	case FilterPath:
		return "path"
	case FilterMethod:
		return "method"
	case FilterAllOf:
		return "all_of"
	case FilterAnyOf:
		return "any_of"
	}
	return fmt.Sprintf("FilterKind(%d)", uint8(k))
}

// MaxFilterDepth bounds how deeply all_of and any_of nest on the wire.
// mirrord's grammar nests one level; a little room is left.
const MaxFilterDepth = 4

// HTTPFilter selects HTTP requests. The zero value is FilterNone.
type HTTPFilter struct {
	Kind FilterKind
	// Pattern is the regular expression (header, path) or the method name.
	Pattern string
	// Filters are the members of all_of and any_of (at least one).
	Filters []HTTPFilter
}

// Subscribe asks the agent to steal or mirror a port of the pod. It opens
// a stream that stays open while the subscription lasts.
type Subscribe struct {
	Mode IncomingMode
	// Port is the pod's port.
	Port uint16
	// Linger is how long the agent keeps the subscription after the
	// tunnel is lost, waiting for the client to come back; zero means the
	// agent's communication timeout.
	Linger time.Duration
	// Owner identifies the client instance; a subscription of the same
	// owner for the same port replaces the old one (after a reconnection).
	Owner string
	// Label names the client for people ("alice@laptop"): a refused
	// subscription names the holder by it.
	Label  string
	Filter HTTPFilter
}

// Incoming hands a connection (or the HTTP requests of one that match) to
// the client. The agent opens the stream; the client answers with a Result
// once it has reached the local app (or failed to).
type Incoming struct {
	Mode IncomingMode
	// Port is the subscribed pod port.
	Port uint16
	// Src is the connection's peer; Dst its original destination.
	Src, Dst netip.AddrPort
}

// Type implements Message.
func (Subscribe) Type() Type { return TypeSubscribe }

// Type implements Message.
func (Incoming) Type() Type { return TypeIncoming }

func (m Subscribe) appendBody(b []byte) ([]byte, error) {
	if err := checkMode(m.Mode); err != nil {
		return b, err
	}
	if m.Port == 0 {
		return b, fmt.Errorf("port 0 is invalid: want 1-65535")
	}
	b = appendU16(append(b, byte(m.Mode)), m.Port)
	b, err := appendMillis(b, m.Linger, "linger")
	if err != nil {
		return b, err
	}
	if b, err = appendStr(b, m.Owner, "owner"); err != nil {
		return b, err
	}
	if b, err = appendStr(b, m.Label, "label"); err != nil {
		return b, err
	}
	return m.Filter.appendTo(b, "filter", 1)
}

func (m Incoming) appendBody(b []byte) ([]byte, error) {
	if err := checkMode(m.Mode); err != nil {
		return b, err
	}
	b = appendU16(append(b, byte(m.Mode)), m.Port)
	b, err := appendAddrPort(b, m.Src, "src")
	if err != nil {
		return b, err
	}
	return appendAddrPort(b, m.Dst, "dst")
}

func checkMode(m IncomingMode) error {
	if m != ModeSteal && m != ModeMirror {
		return fmt.Errorf("incoming mode %d is unknown: valid modes are %d (steal) and %d (mirror)", m, ModeSteal, ModeMirror)
	}
	return nil
}

func (f HTTPFilter) appendTo(b []byte, field string, depth int) ([]byte, error) {
	if depth > MaxFilterDepth {
		return b, fmt.Errorf("%s nests deeper than %d levels", field, MaxFilterDepth)
	}
	switch f.Kind {
	case FilterNone:
		if f.Pattern != "" || f.Filters != nil {
			return b, fmt.Errorf("%s: kind none carries no pattern and no filters", field)
		}
		return append(b, byte(f.Kind)), nil
	case FilterHeader, FilterPath, FilterMethod:
		if f.Filters != nil {
			return b, fmt.Errorf("%s: a %s filter has a pattern, not member filters", field, f.Kind)
		}
		return appendStr(append(b, byte(f.Kind)), f.Pattern, field+" pattern")
	case FilterAllOf, FilterAnyOf:
		if f.Pattern != "" {
			return b, fmt.Errorf("%s: an %s filter has member filters, not a pattern", field, f.Kind)
		}
		if len(f.Filters) == 0 || len(f.Filters) > math.MaxUint16 {
			return b, fmt.Errorf("%s: an %s filter needs 1 to %d member filters, has %d", field, f.Kind, math.MaxUint16, len(f.Filters))
		}
		b = appendU16(append(b, byte(f.Kind)), uint16(len(f.Filters)))
		var err error
		for i, inner := range f.Filters {
			if b, err = inner.appendTo(b, fmt.Sprintf("%s.%s[%d]", field, f.Kind, i), depth+1); err != nil {
				return b, err
			}
		}
		return b, nil
	}
	return b, fmt.Errorf("%s: filter kind %d is unknown: valid kinds are 0 to %d", field, f.Kind, maxFilterKind)
}

func (d *decoder) mode(field string) IncomingMode {
	m := IncomingMode(d.u8(field))
	if d.err == nil {
		if err := checkMode(m); err != nil {
			d.fail("%s: %v", field, err)
		}
	}
	return m
}

func (d *decoder) filter(field string, depth int) HTTPFilter {
	var f HTTPFilter
	if depth > MaxFilterDepth {
		d.fail("%s nests deeper than %d levels", field, MaxFilterDepth)
		return f
	}
	f.Kind = FilterKind(d.u8(field + " kind"))
	if d.err != nil {
		return HTTPFilter{}
	}
	switch f.Kind {
	case FilterNone:
	case FilterHeader, FilterPath, FilterMethod:
		f.Pattern = d.str(field + " pattern")
	case FilterAllOf, FilterAnyOf:
		n := int(d.u16(field + " count"))
		if d.err == nil && n == 0 {
			d.fail("%s: an %s filter needs at least one member filter", field, f.Kind)
		}
		for i := 0; i < n && d.err == nil; i++ {
			inner := d.filter(fmt.Sprintf("%s.%s[%d]", field, f.Kind, i), depth+1)
			if d.err == nil {
				f.Filters = append(f.Filters, inner)
			}
		}
	default:
		d.fail("%s kind %d is unknown: valid kinds are 0 to %d", field, f.Kind, maxFilterKind)
	}
	if d.err != nil {
		return HTTPFilter{}
	}
	return f
}

func (d *decoder) subscribe() Subscribe {
	m := Subscribe{Mode: d.mode("mode"), Port: d.u16("port")}
	if d.err == nil && m.Port == 0 {
		d.fail("port 0 is invalid: want 1-65535")
	}
	m.Linger = d.millis("linger")
	m.Owner = d.str("owner")
	m.Label = d.str("label")
	m.Filter = d.filter("filter", 1)
	return m
}

func (d *decoder) incoming() Incoming {
	return Incoming{Mode: d.mode("mode"), Port: d.u16("port"), Src: d.addrPort("src"), Dst: d.addrPort("dst")}
}
