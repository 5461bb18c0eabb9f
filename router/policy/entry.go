package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Proto is the transport protocol a rule or flow is about.
type Proto uint8

const (
	AnyProto Proto = iota
	TCP
	UDP
	// ICMP is a flow's protocol only (echo requests): mirrord's grammar has
	// no icmp://, so only entries for any protocol and any port match it.
	ICMP
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case ICMP:
		return "icmp"
	}
	return "any"
}

// ParseProto reads "tcp", "udp" or "any" (any case).
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "any":
		return AnyProto, nil
	}
	return AnyProto, fmt.Errorf("unknown protocol %q (valid: tcp, udp, any)", s)
}

// Entry is one parsed filter entry:
// [tcp|udp|any://][host | IPv4 | [IPv6]][/prefix][:port].
type Entry struct {
	Raw   string
	Proto Proto
	// Host is a lower-case hostname without a trailing dot; empty when the
	// entry names an address or no address at all.
	Host string
	// Prefix is the address range; the zero Prefix (and 0.0.0.0, [::]) means
	// any address.
	Prefix netip.Prefix
	// Port is the destination port; 0 means any port.
	Port uint16
}

// AnyAddress reports whether the entry matches every destination address.
func (e Entry) AnyAddress() bool { return e.Host == "" && !e.Prefix.IsValid() }

// ParseEntry parses one filter entry. Its errors say what is wrong with the
// entry and what would be valid; the caller adds which list it came from.
func ParseEntry(raw string) (Entry, error) {
	e := Entry{Raw: raw}
	s := strings.TrimSpace(raw)
	if s == "" {
		return e, fmt.Errorf("empty entry (valid forms: \"tcp://1.2.3.0/24:7777\", \"app-db\", \":8888\", \"udp://:53\")")
	}
	proto, s, err := parseScheme(s)
	if err != nil {
		return e, err
	}
	e.Proto = proto
	parts, err := splitAddress(s)
	if err != nil {
		return e, err
	}
	if parts.port != "" {
		if e.Port, err = parsePort(parts.port); err != nil {
			return e, err
		}
	}
	if err := e.setDestination(parts); err != nil {
		return e, err
	}
	return e, nil
}

// parseScheme reads the optional "proto://" in front of s and returns the
// protocol (AnyProto when there is none) and the rest of the entry.
func parseScheme(s string) (Proto, string, error) {
	p := AnyProto
	if i := strings.Index(s, "://"); i >= 0 {
		var err error
		p, err = ParseProto(s[:i])
		if err != nil {
			if strings.ContainsAny(s[:i], ":/[]") || i == 0 {
				return p, s, fmt.Errorf("the protocol must come first, as in \"tcp://host:port\"; got %q before \"://\"", s[:i])
			}
			return p, s, err
		}
		s = s[i+3:]
	}
	if strings.Contains(s, "://") {
		return p, s, fmt.Errorf("\"://\" may appear only once, after the protocol")
	}
	return p, s, nil
}

// addressParts are the still unparsed pieces of an entry after its scheme:
// host[/prefix][:port], each "" when absent. hasPrefix tells "10.0.0.0/"
// (an empty prefix, an error) from no prefix at all.
type addressParts struct {
	host, prefix, port string
	hasPrefix          bool
}

// splitAddress cuts host, prefix and port apart. An IPv6 address must be in
// brackets, since its colons would be taken for the port's.
func splitAddress(s string) (addressParts, error) {
	if strings.HasPrefix(s, "[") {
		return splitBracketed(s)
	}
	var a addressParts
	if strings.Count(s, ":") > 1 {
		return a, fmt.Errorf("an IPv6 address must be written in brackets, as in \"[%s]\" or \"tcp://[::1]:8080\"", s)
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		s, a.port = s[:i], s[i+1:]
		if a.port == "" {
			return a, fmt.Errorf("missing port after \":\"")
		}
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s, a.prefix, a.hasPrefix = s[:i], s[i+1:], true
	}
	a.host = s
	return a, nil
}

// splitBracketed cuts "[IPv6][/prefix][:port]" apart; s starts with "[".
func splitBracketed(s string) (addressParts, error) {
	var a addressParts
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return a, fmt.Errorf("missing \"]\" after the IPv6 address")
	}
	a.host, s = s[1:end], s[end+1:]
	if a.host == "" {
		return a, fmt.Errorf("empty IPv6 address in \"[]\"")
	}
	if _, err := netip.ParseAddr(a.host); err != nil || !strings.Contains(a.host, ":") {
		return a, fmt.Errorf("%q in brackets is not an IPv6 address", a.host)
	}
	if strings.HasPrefix(s, "/") {
		a.hasPrefix = true
		s = s[1:]
		if i := strings.IndexByte(s, ':'); i >= 0 {
			a.prefix, s = s[:i], s[i:]
		} else {
			a.prefix, s = s, ""
		}
	}
	if s != "" {
		if !strings.HasPrefix(s, ":") {
			return a, fmt.Errorf("unexpected %q after the IPv6 address (valid: \"[::1]\", \"[fd00::]/8\", \"[::1]:8080\")", s)
		}
		a.port = s[1:]
		if a.port == "" {
			return a, fmt.Errorf("missing port after \":\"")
		}
	}
	return a, nil
}

// parsePort reads a destination port; 0 is refused, since it means "any".
func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(p), nil
}

// setDestination fills in e.Prefix or e.Host from the address part: none
// (any address), an IP address with an optional prefix, or a hostname.
func (e *Entry) setDestination(a addressParts) error {
	if a.host == "" {
		if a.hasPrefix {
			return fmt.Errorf("a /prefix needs an IP address before it, as in \"10.0.0.0/8\"")
		}
		return nil
	}
	if addr, err := netip.ParseAddr(a.host); err == nil {
		e.Prefix, err = parsePrefix(a.host, addr, a.prefix, a.hasPrefix)
		return err
	}
	if looksNumeric(a.host) {
		return fmt.Errorf("%q is not a valid IPv4 address", a.host)
	}
	if a.hasPrefix {
		return fmt.Errorf("a /prefix is allowed only after an IP address, not after the hostname %q", a.host)
	}
	if err := checkHostname(a.host); err != nil {
		return err
	}
	e.Host = normalizeName(a.host)
	return nil
}

// parsePrefix turns addr (written as host) and its optional prefix length
// into the entry's range. The zero Prefix it returns for 0.0.0.0 and [::]
// means any address, as in mirrord.
func parsePrefix(host string, addr netip.Addr, prefix string, hasPrefix bool) (netip.Prefix, error) {
	if addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q has a zone (%%%s); filter addresses cannot name an interface", host, addr.Zone())
	}
	addr = addr.Unmap()
	bits := addr.BitLen()
	if hasPrefix {
		n, err := strconv.Atoi(prefix)
		if err != nil || n < 0 || n > bits {
			return netip.Prefix{}, fmt.Errorf("prefix length %q must be a number from 0 to %d", prefix, bits)
		}
		bits = n
	}
	if addr.IsUnspecified() && bits == addr.BitLen() {
		return netip.Prefix{}, nil
	}
	return netip.PrefixFrom(addr, bits).Masked(), nil
}

func looksNumeric(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && r != '.' {
			return false
		}
	}
	return true
}

func checkHostname(h string) error {
	name := strings.TrimSuffix(h, ".")
	if len(name) > 253 {
		return fmt.Errorf("hostname %q is longer than 253 characters", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" {
			return fmt.Errorf("hostname %q has an empty label", h)
		}
		if len(label) > 63 {
			return fmt.Errorf("hostname %q has a label longer than 63 characters", h)
		}
		for _, r := range label {
			ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
			if !ok {
				return fmt.Errorf("hostname %q contains %q (valid: letters, digits, '-', '_', '.')", h, r)
			}
		}
	}
	return nil
}

// normalizeName lower-cases a DNS name and drops its trailing dot.
func normalizeName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// String renders the entry in canonical form.
func (e Entry) String() string {
	var b strings.Builder
	if e.Proto != AnyProto {
		b.WriteString(e.Proto.String() + "://")
	}
	switch {
	case e.Host != "":
		b.WriteString(e.Host)
	case e.Prefix.IsValid():
		a := e.Prefix.Addr()
		if a.Is6() {
			b.WriteString("[" + a.String() + "]")
		} else {
			b.WriteString(a.String())
		}
		if e.Prefix.Bits() != a.BitLen() {
			fmt.Fprintf(&b, "/%d", e.Prefix.Bits())
		}
	}
	if e.Port != 0 {
		fmt.Fprintf(&b, ":%d", e.Port)
	}
	if b.Len() == 0 {
		return "any://"
	}
	return b.String()
}
