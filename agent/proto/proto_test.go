package proto

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleMessages is one of each message, with every field set; it also
// seeds FuzzDecode.
func sampleMessages() []Message {
	return []Message{
		Hello{Version: Version, Token: "s3cret"},
		Hello{Version: 7},
		Welcome{Version: Version, Facts: Facts{
			Hostname:      "uwu-app-7d9f",
			Addresses:     []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::3")},
			SearchDomains: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
			Ndots:         5,
			Options:       []string{"timeout:2", "attempts:3"},
			IncomingError: "iptables: Permission denied (you must be root)",
		}},
		Welcome{Version: Version},
		Refused{Code: RefuseToken, Reason: "wrong token"},
		Refused{Code: RefuseVersion, Reason: "version 9 unsupported"},
		DialTCP{Timeout: 30 * time.Second, Dst: netip.MustParseAddrPort("10.0.0.7:8080")},
		DialTCP{Dst: netip.MustParseAddrPort("[::1]:5432")},
		DialUDP{Timeout: time.Millisecond, Dst: netip.MustParseAddrPort("127.0.0.1:53")},
		DNS{Timeout: 5 * time.Second, Query: []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}},
		Ping{},
		Result{},
		Result{Class: ClassRefused, Message: "dial tcp 10.0.0.7:8080: connect: connection refused"},
		Result{Class: ClassOK, Data: []byte("raw dns answer")},
		Abort{StreamID: 0xfffffffd},
		Subscribe{Mode: ModeSteal, Port: 80, Linger: 2 * time.Second, Owner: "0123456789abcdef", Label: "alice@laptop"},
		Subscribe{Mode: ModeMirror, Port: 9999, Filter: HTTPFilter{Kind: FilterHeader, Pattern: "^x-user: alice$"}},
		Subscribe{Mode: ModeSteal, Port: 8080, Owner: "o", Label: "bob@ci", Filter: HTTPFilter{Kind: FilterAnyOf, Filters: []HTTPFilter{
			{Kind: FilterPath, Pattern: "^/api"},
			{Kind: FilterAllOf, Filters: []HTTPFilter{{Kind: FilterMethod, Pattern: "POST"}, {Kind: FilterHeader, Pattern: "x-b: 1"}}},
		}}},
		Incoming{Mode: ModeSteal, Port: 80, Src: netip.MustParseAddrPort("10.244.0.11:41234"), Dst: netip.MustParseAddrPort("10.244.0.10:80")},
		Incoming{Mode: ModeMirror, Port: 443, Src: netip.MustParseAddrPort("[::1]:5"), Dst: netip.MustParseAddrPort("[::1]:443")},
		Env{},
		Retire{},
		Refused{Code: RefuseRetiring, Reason: "leaving"},
		Result{Class: ClassOK, Data: []byte("PATH=/usr/bin:/bin\x00GREETING=hello=there\x00EMPTY=\x00")},
		DNSStream{},
		DNSQuery{ID: 1, Timeout: 2 * time.Second, Query: []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}},
		DNSQuery{ID: 0xffffffff},
		DNSAnswer{ID: 1, Answer: []byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}},
		DNSAnswer{ID: 0x80000000, Class: ClassNameNotFound, Message: "lookup missing.example: no such host"},
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	var stream bytes.Buffer
	for _, m := range sampleMessages() {
		b, err := Append(nil, m)
		if err != nil {
			t.Fatalf("Append(%#v): %v", m, err)
		}
		got, n, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", m.Type(), err)
		}
		if n != len(b) {
			t.Errorf("Decode(%s) took %d bytes, frame has %d", m.Type(), n, len(b))
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip of %s:\n got %#v\nwant %#v", m.Type(), got, m)
		}
		if err := WriteMessage(&stream, m); err != nil {
			t.Fatal(err)
		}
	}
	// The same messages read back one by one from a stream.
	for _, want := range sampleMessages() {
		got, err := ReadMessage(&stream)
		if err != nil {
			t.Fatalf("ReadMessage (want %s): %v", want.Type(), err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ReadMessage:\n got %#v\nwant %#v", got, want)
		}
	}
	if _, err := ReadMessage(&stream); err != io.EOF {
		t.Errorf("ReadMessage at the end = %v, want io.EOF", err)
	}
}

func TestReadMessageLeavesPayload(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteMessage(&buf, Result{}); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("payload")
	if _, err := ReadMessage(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "payload" {
		t.Errorf("after the Result the reader holds %q, want %q", buf.String(), "payload")
	}
}

func TestDecodeRejectsBadFrames(t *testing.T) {
	good, err := Append(nil, DialTCP{Dst: netip.MustParseAddrPort("10.0.0.1:80")})
	if err != nil {
		t.Fatal(err)
	}
	withExtra := append(append([]byte(nil), good...), 0)
	withExtra[4]++ // body length covers the extra byte
	badAddrLen := append([]byte(nil), good...)
	badAddrLen[HeaderSize+4] = 5
	cases := map[string]struct {
		frame []byte
		want  string
	}{
		"unknown type":   {[]byte{42, 0, 0, 0, 0}, "frame type 42 is unknown"},
		"type zero":      {[]byte{0, 0, 0, 0, 0}, "frame type 0 is unknown"},
		"huge length":    {[]byte{byte(TypePing), 0xff, 0xff, 0xff, 0xff}, "exceeds the maximum"},
		"trailing bytes": {withExtra, "1 bytes left over"},
		"address length": {badAddrLen, "dst length 5 is invalid"},
		"short field":    {[]byte{byte(TypeAbort), 0, 0, 0, 2, 1, 2}, "stream id needs 4 bytes, 2 left"},
		"unknown class":  {[]byte{byte(TypeResult), 0, 0, 0, 3, 9, 0, 0}, "result class 9 is unknown"},
		"unknown code":   {[]byte{byte(TypeRefused), 0, 0, 0, 3, 4, 0, 0}, "refusal code 4 is unknown"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := Decode(c.frame)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Decode = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestDecodeShortFrame(t *testing.T) {
	b, err := Append(nil, Hello{Version: Version, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(b) {
		if _, _, err := Decode(b[:i]); !errors.Is(err, ErrShortFrame) {
			t.Fatalf("Decode of %d of %d bytes = %v, want ErrShortFrame", i, len(b), err)
		}
		if _, err := ReadMessage(bytes.NewReader(b[:i])); i > 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("ReadMessage of %d of %d bytes = %v, want io.ErrUnexpectedEOF", i, len(b), err)
		}
	}
}

func TestEncodeRejectsBadFields(t *testing.T) {
	cases := map[string]struct {
		m    Message
		want string
	}{
		"zone":         {DialTCP{Dst: netip.MustParseAddrPort("[fe80::1%eth0]:80")}, "has a zone"},
		"no address":   {DialUDP{}, "dst is not a valid IP address"},
		"negative":     {DialTCP{Timeout: -time.Second, Dst: netip.MustParseAddrPort("1.2.3.4:5")}, "timeout -1s is negative"},
		"long token":   {Hello{Token: strings.Repeat("x", 70000)}, "token is 70000 bytes long"},
		"ndots":        {Welcome{Facts: Facts{Ndots: 300}}, "ndots 300 is out of range"},
		"huge body":    {DNS{Query: make([]byte, MaxBodySize)}, "exceeds the maximum"},
		"result class": {Result{Class: 200}, "result class 200 is unknown"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := Append([]byte("keep"), c.m)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Append = %v, want an error containing %q", err, c.want)
			}
			if string(b) != "keep" {
				t.Errorf("a failed Append left %q in the buffer, want it unchanged", b)
			}
		})
	}
}

func TestTimeoutRoundsUpToMilliseconds(t *testing.T) {
	b, err := Append(nil, DNS{Timeout: 10 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.(DNS).Timeout; got != time.Millisecond {
		t.Errorf("10µs travels as %s, want 1ms (never zero, which means the default)", got)
	}
}

func TestDatagrams(t *testing.T) {
	var buf bytes.Buffer
	for _, d := range [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{7}, MaxDatagramSize)} {
		if err := WriteDatagram(&buf, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteDatagram(&buf, make([]byte, MaxDatagramSize+1)); err == nil {
		t.Error("WriteDatagram accepted a datagram larger than MaxDatagramSize")
	}
	p := make([]byte, 16)
	if n, err := ReadDatagram(&buf, p); err != nil || string(p[:n]) != "hello" {
		t.Errorf("first datagram = %q, %v; want hello", p[:n], err)
	}
	if n, err := ReadDatagram(&buf, p); err != nil || n != 0 {
		t.Errorf("empty datagram = %d bytes, %v; want 0, nil", n, err)
	}
	if n, err := ReadDatagram(&buf, p); !errors.Is(err, ErrTruncated) || n != len(p) {
		t.Errorf("long datagram = %d, %v; want %d, ErrTruncated", n, err, len(p))
	}
	if _, err := ReadDatagram(&buf, p); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
	if _, err := ReadDatagram(bytes.NewReader([]byte{0, 5, 'a'}), p); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut datagram: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestEnvEncoding(t *testing.T) {
	vars := []string{"PATH=/usr/bin:/bin", "GREETING=hello=there", "EMPTY=", "UNI=ü"}
	b, err := EncodeEnv(vars)
	if err != nil {
		t.Fatal(err)
	}
	if want := "PATH=/usr/bin:/bin\x00GREETING=hello=there\x00EMPTY=\x00UNI=ü\x00"; string(b) != want {
		t.Fatalf("EncodeEnv = %q, want %q", b, want)
	}
	got, err := DecodeEnv(b)
	if err != nil || !reflect.DeepEqual(got, vars) {
		t.Fatalf("DecodeEnv = %q, %v; want %q", got, err, vars)
	}
	if got, err := DecodeEnv(nil); err != nil || got != nil {
		t.Errorf("DecodeEnv(nil) = %q, %v; want nothing", got, err)
	}
	// The answer travels as a Result.
	frame, err := Append(nil, Result{Data: b})
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := Decode(frame)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeEnv(m.(Result).Data); err != nil || !reflect.DeepEqual(got, vars) {
		t.Errorf("through a Result: %q, %v", got, err)
	}
}

func TestEnvEncodingErrors(t *testing.T) {
	for _, vars := range [][]string{{"NOEQUALS"}, {"=value"}, {"A=b\x00c"}, {strings.Repeat("A", MaxEnvSize) + "=x"}} {
		if _, err := EncodeEnv(vars); err == nil {
			t.Errorf("EncodeEnv(%.40q) succeeded, want an error", vars)
		}
	}
	for data, want := range map[string]string{
		"A=1":          "does not end with a NUL",
		"A=1\x00\x00":  "entry 1",
		"A=1\x00B\x00": "entry 1 \"B\"",
		"=1\x00":       "non-empty KEY",
		"\x00":         "entry 0",
	} {
		_, err := DecodeEnv([]byte(data))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeEnv(%q) = %v, want an error with %q", data, err, want)
		}
	}
}
