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
	if i := strings.Index(s, "://"); i >= 0 {
		p, err := ParseProto(s[:i])
		if err != nil {
			if strings.ContainsAny(s[:i], ":/[]") || i == 0 {
				return e, fmt.Errorf("the protocol must come first, as in \"tcp://host:port\"; got %q before \"://\"", s[:i])
			}
			return e, err
		}
		e.Proto = p
		s = s[i+3:]
	}
	if strings.Contains(s, "://") {
		return e, fmt.Errorf("\"://\" may appear only once, after the protocol")
	}

	var hostPart, prefixPart, portPart string
	hasPrefix := false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return e, fmt.Errorf("missing \"]\" after the IPv6 address")
		}
		hostPart, s = s[1:end], s[end+1:]
		if hostPart == "" {
			return e, fmt.Errorf("empty IPv6 address in \"[]\"")
		}
		if _, err := netip.ParseAddr(hostPart); err != nil || !strings.Contains(hostPart, ":") {
			return e, fmt.Errorf("%q in brackets is not an IPv6 address", hostPart)
		}
		if strings.HasPrefix(s, "/") {
			hasPrefix = true
			s = s[1:]
			if i := strings.IndexByte(s, ':'); i >= 0 {
				prefixPart, s = s[:i], s[i:]
			} else {
				prefixPart, s = s, ""
			}
		}
		if s != "" {
			if !strings.HasPrefix(s, ":") {
				return e, fmt.Errorf("unexpected %q after the IPv6 address (valid: \"[::1]\", \"[fd00::]/8\", \"[::1]:8080\")", s)
			}
			portPart = s[1:]
			if portPart == "" {
				return e, fmt.Errorf("missing port after \":\"")
			}
		}
	} else {
		if strings.Count(s, ":") > 1 {
			return e, fmt.Errorf("an IPv6 address must be written in brackets, as in \"[%s]\" or \"tcp://[::1]:8080\"", s)
		}
		if i := strings.IndexByte(s, ':'); i >= 0 {
			s, portPart = s[:i], s[i+1:]
			if portPart == "" {
				return e, fmt.Errorf("missing port after \":\"")
			}
		}
		if i := strings.IndexByte(s, '/'); i >= 0 {
			s, prefixPart, hasPrefix = s[:i], s[i+1:], true
		}
		hostPart = s
	}

	if portPart != "" {
		p, err := strconv.ParseUint(portPart, 10, 16)
		if err != nil || p == 0 {
			return e, fmt.Errorf("port %q is not a number from 1 to 65535", portPart)
		}
		e.Port = uint16(p)
	}

	if hostPart == "" {
		if hasPrefix {
			return e, fmt.Errorf("a /prefix needs an IP address before it, as in \"10.0.0.0/8\"")
		}
		return e, nil
	}
	if addr, err := netip.ParseAddr(hostPart); err == nil {
		if addr.Zone() != "" {
			return e, fmt.Errorf("%q has a zone (%%%s); filter addresses cannot name an interface", hostPart, addr.Zone())
		}
		addr = addr.Unmap()
		bits := addr.BitLen()
		if hasPrefix {
			n, err := strconv.Atoi(prefixPart)
			if err != nil || n < 0 || n > bits {
				return e, fmt.Errorf("prefix length %q must be a number from 0 to %d", prefixPart, bits)
			}
			bits = n
		}
		if addr.IsUnspecified() && bits == addr.BitLen() {
			// 0.0.0.0 (or [::]) means any address, as in mirrord.
			return e, nil
		}
		e.Prefix = netip.PrefixFrom(addr, bits).Masked()
		return e, nil
	}
	if looksNumeric(hostPart) {
		return e, fmt.Errorf("%q is not a valid IPv4 address", hostPart)
	}
	if hasPrefix {
		return e, fmt.Errorf("a /prefix is allowed only after an IP address, not after the hostname %q", hostPart)
	}
	if err := checkHostname(hostPart); err != nil {
		return e, err
	}
	e.Host = normalizeName(hostPart)
	return e, nil
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
