package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"time"
)

// ErrShortFrame means a buffer ends before the frame it starts is complete.
var ErrShortFrame = errors.New("short frame")

// Append appends m's frame (header and body) to b.
func Append(b []byte, m Message) ([]byte, error) {
	start := len(b)
	b = append(b, byte(m.Type()), 0, 0, 0, 0)
	b, err := m.appendBody(b)
	if err != nil {
		return b[:start], fmt.Errorf("encode %s: %w", m.Type(), err)
	}
	n := len(b) - start - HeaderSize
	if n > MaxBodySize {
		return b[:start], fmt.Errorf("encode %s: body of %d bytes exceeds the maximum of %d", m.Type(), n, MaxBodySize)
	}
	binary.BigEndian.PutUint32(b[start+1:], uint32(n))
	return b, nil
}

// WriteMessage writes m as one frame with a single Write call, so frames
// from concurrent writers on a yamux stream do not interleave.
func WriteMessage(w io.Writer, m Message) error {
	b, err := Append(nil, m)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", m.Type(), err)
	}
	return nil
}

// ReadMessage reads exactly one frame from r and decodes it. It never reads
// past the frame, so the payload that follows a Result stays in r.
func ReadMessage(r io.Reader) (Message, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("read frame header: %w", err)
		}
		return nil, err // io.EOF at a frame boundary stays io.EOF
	}
	t, n, err := parseHeader(hdr[:])
	if err != nil {
		return nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %s body: %w", t, err)
	}
	return decodeBody(t, body)
}

// Decode decodes the frame at the start of b and returns it with the
// number of bytes it took. It returns ErrShortFrame (wrapped) when b holds
// only part of a frame.
func Decode(b []byte) (Message, int, error) {
	if len(b) < HeaderSize {
		return nil, 0, fmt.Errorf("frame header needs %d bytes, have %d: %w", HeaderSize, len(b), ErrShortFrame)
	}
	t, n, err := parseHeader(b)
	if err != nil {
		return nil, 0, err
	}
	if len(b)-HeaderSize < n {
		return nil, 0, fmt.Errorf("%s body needs %d bytes, have %d: %w", t, n, len(b)-HeaderSize, ErrShortFrame)
	}
	m, err := decodeBody(t, b[HeaderSize:HeaderSize+n])
	if err != nil {
		return nil, 0, err
	}
	return m, HeaderSize + n, nil
}

func parseHeader(hdr []byte) (Type, int, error) {
	t := Type(hdr[0])
	if t < TypeHello || t > maxType {
		return 0, 0, fmt.Errorf("frame type %d is unknown: valid types are %d to %d", hdr[0], TypeHello, maxType)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxBodySize {
		return 0, 0, fmt.Errorf("%s body length %d exceeds the maximum of %d", t, n, MaxBodySize)
	}
	return t, int(n), nil
}

func decodeBody(t Type, body []byte) (Message, error) {
	d := decoder{b: body}
	var m Message
	switch t {
	case TypeHello:
		m = Hello{Version: d.u16("version"), Token: d.str("token")}
	case TypeWelcome:
		m = Welcome{Version: d.u16("version"), Facts: d.facts()}
	case TypeRefused:
		r := Refused{Code: RefuseCode(d.u8("code")), Reason: d.str("reason")}
		if d.err == nil && (r.Code < RefuseToken || r.Code > RefuseRetiring) {
			d.fail("refusal code %d is unknown: valid codes are %d to %d", r.Code, RefuseToken, RefuseRetiring)
		}
		m = r
	case TypeDialTCP:
		m = DialTCP{Timeout: d.millis("timeout"), Dst: d.addrPort("dst")}
	case TypeDialUDP:
		m = DialUDP{Timeout: d.millis("timeout"), Dst: d.addrPort("dst")}
	case TypeDNS:
		m = DNS{Timeout: d.millis("timeout"), Query: d.rest()}
	case TypePing:
		m = Ping{}
	case TypeEnv:
		m = Env{}
	case TypeRetire:
		m = Retire{}
	case TypeResult:
		m = Result{Class: d.class(), Message: d.str("message"), Data: d.rest()}
	case TypeAbort:
		m = Abort{StreamID: d.u32("stream id")}
	case TypeSubscribe:
		m = d.subscribe()
	case TypeIncoming:
		m = d.incoming()
	case TypeDNSStream:
		m = DNSStream{}
	case TypeDNSQuery:
		m = d.dnsQuery()
	case TypeDNSAnswer:
		m = d.dnsAnswer()
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d bytes left over after the last field", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode %s: %w", t, d.err)
	}
	return m, nil
}

// decoder reads fields off a body; the first error sticks and later reads
// return zero values, so a message decodes in one expression.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("%s needs %d bytes, %d left", field, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8(field string) uint8 {
	if v := d.take(1, field); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u16(field string) uint16 {
	if v := d.take(2, field); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) u32(field string) uint32 {
	if v := d.take(4, field); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) class() Class {
	c := Class(d.u8("class"))
	if d.err == nil && c > maxClass {
		d.fail("result class %d is unknown: valid classes are 0 to %d", c, maxClass)
	}
	return c
}

func (d *decoder) millis(field string) time.Duration {
	return time.Duration(d.u32(field)) * time.Millisecond
}

func (d *decoder) str(field string) string {
	n := d.u16(field + " length")
	return string(d.take(int(n), field))
}

func (d *decoder) rest() []byte {
	if d.err != nil || len(d.b) == 0 {
		return nil
	}
	v := d.b
	d.b = nil
	return append([]byte(nil), v...)
}

func (d *decoder) addr(field string) netip.Addr {
	n := d.u8(field + " length")
	if d.err != nil {
		return netip.Addr{}
	}
	if n != 4 && n != 16 {
		d.fail("%s length %d is invalid: an address is 4 or 16 bytes", field, n)
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(d.take(int(n), field))
	return a
}

func (d *decoder) addrPort(field string) netip.AddrPort {
	a := d.addr(field)
	p := d.u16(field + " port")
	return netip.AddrPortFrom(a, p)
}

func (d *decoder) strList(field string) []string {
	n := int(d.u16(field + " count"))
	var out []string
	for i := 0; i < n && d.err == nil; i++ {
		s := d.str(fmt.Sprintf("%s[%d]", field, i))
		if d.err == nil {
			out = append(out, s)
		}
	}
	return out
}

func (d *decoder) facts() Facts {
	var f Facts
	f.Hostname = d.str("hostname")
	n := int(d.u16("addresses count"))
	for i := 0; i < n && d.err == nil; i++ {
		a := d.addr(fmt.Sprintf("addresses[%d]", i))
		if d.err == nil {
			f.Addresses = append(f.Addresses, a)
		}
	}
	f.SearchDomains = d.strList("search domains")
	f.Ndots = int(d.u8("ndots"))
	f.Options = d.strList("options")
	f.IncomingError = d.str("incoming error")
	return f
}

// Encoding helpers. Each checks that the value fits its field.

func appendU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

func appendStr(b []byte, s, field string) ([]byte, error) {
	if len(s) > math.MaxUint16 {
		return b, fmt.Errorf("%s is %d bytes long: at most %d fit", field, len(s), math.MaxUint16)
	}
	b = appendU16(b, uint16(len(s)))
	return append(b, s...), nil
}

func appendStrList(b []byte, l []string, field string) ([]byte, error) {
	if len(l) > math.MaxUint16 {
		return b, fmt.Errorf("%s has %d entries: at most %d fit", field, len(l), math.MaxUint16)
	}
	b = appendU16(b, uint16(len(l)))
	var err error
	for i, s := range l {
		if b, err = appendStr(b, s, fmt.Sprintf("%s[%d]", field, i)); err != nil {
			return b, err
		}
	}
	return b, nil
}

func appendAddr(b []byte, a netip.Addr, field string) ([]byte, error) {
	if !a.IsValid() {
		return b, fmt.Errorf("%s is not a valid IP address", field)
	}
	if a.Zone() != "" {
		return b, fmt.Errorf("%s %s has a zone: only addresses without zone travel", field, a)
	}
	s := a.AsSlice()
	b = append(b, byte(len(s)))
	return append(b, s...), nil
}

func appendAddrPort(b []byte, ap netip.AddrPort, field string) ([]byte, error) {
	b, err := appendAddr(b, ap.Addr(), field)
	if err != nil {
		return b, err
	}
	return appendU16(b, ap.Port()), nil
}

func appendMillis(b []byte, d time.Duration, field string) ([]byte, error) {
	if d < 0 {
		return b, fmt.Errorf("%s %s is negative: use zero for the agent's default", field, d)
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond // round up: never turn 0.5 ms into "default"
	if ms > math.MaxUint32 {
		ms = math.MaxUint32
	}
	return appendU32(b, uint32(ms)), nil
}

func (m Hello) appendBody(b []byte) ([]byte, error) {
	return appendStr(appendU16(b, m.Version), m.Token, "token")
}

func (m Welcome) appendBody(b []byte) ([]byte, error) {
	b = appendU16(b, m.Version)
	return m.Facts.appendTo(b)
}

func (f Facts) appendTo(b []byte) ([]byte, error) {
	b, err := appendStr(b, f.Hostname, "hostname")
	if err != nil {
		return b, err
	}
	if len(f.Addresses) > math.MaxUint16 {
		return b, fmt.Errorf("addresses has %d entries: at most %d fit", len(f.Addresses), math.MaxUint16)
	}
	b = appendU16(b, uint16(len(f.Addresses)))
	for i, a := range f.Addresses {
		if b, err = appendAddr(b, a, fmt.Sprintf("addresses[%d]", i)); err != nil {
			return b, err
		}
	}
	if b, err = appendStrList(b, f.SearchDomains, "search domains"); err != nil {
		return b, err
	}
	if f.Ndots < 0 || f.Ndots > math.MaxUint8 {
		return b, fmt.Errorf("ndots %d is out of range: valid values are 0 to %d", f.Ndots, math.MaxUint8)
	}
	b = append(b, byte(f.Ndots))
	if b, err = appendStrList(b, f.Options, "options"); err != nil {
		return b, err
	}
	return appendStr(b, f.IncomingError, "incoming error")
}

func (m Refused) appendBody(b []byte) ([]byte, error) {
	return appendStr(append(b, byte(m.Code)), m.Reason, "reason")
}

func (m DialTCP) appendBody(b []byte) ([]byte, error) {
	b, err := appendMillis(b, m.Timeout, "timeout")
	if err != nil {
		return b, err
	}
	return appendAddrPort(b, m.Dst, "dst")
}

func (m DialUDP) appendBody(b []byte) ([]byte, error) {
	return DialTCP(m).appendBody(b)
}

func (m DNS) appendBody(b []byte) ([]byte, error) {
	b, err := appendMillis(b, m.Timeout, "timeout")
	if err != nil {
		return b, err
	}
	return append(b, m.Query...), nil
}

func (Ping) appendBody(b []byte) ([]byte, error) { return b, nil }

func (Env) appendBody(b []byte) ([]byte, error) { return b, nil }

func (Retire) appendBody(b []byte) ([]byte, error) { return b, nil }

func (m Result) appendBody(b []byte) ([]byte, error) {
	if m.Class > maxClass {
		return b, fmt.Errorf("result class %d is unknown: valid classes are 0 to %d", m.Class, maxClass)
	}
	b, err := appendStr(append(b, byte(m.Class)), m.Message, "message")
	if err != nil {
		return b, err
	}
	return append(b, m.Data...), nil
}

func (m Abort) appendBody(b []byte) ([]byte, error) { return appendU32(b, m.StreamID), nil }
