package proto

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The golden files pin the wire format: an agent image and a CLI built at
// different commits must agree byte for byte, and a change made to both
// the encoder and the decoder would pass a round-trip test unnoticed.
//
// After a deliberate change of the format (which comes with a new Version,
// see doc.go), regenerate the files and review the diff:
//
//	go test ./agent/proto -run 'TestGolden' -update
var update = flag.Bool("update", false, "rewrite testdata/golden from the current encoder")

const goldenDir = "testdata/golden"

// goldenMessage is one message value and the file holding its frame.
type goldenMessage struct {
	file string // name under testdata/golden, without .hex
	msg  Message
}

// goldenMessages holds at least one value of every message type, with
// every field set (lists of several entries, IPv4 and IPv6 addresses).
func goldenMessages() []goldenMessage {
	env, err := EncodeEnv(goldenEnv)
	if err != nil {
		panic(err)
	}
	return []goldenMessage{
		{"Hello", Hello{Version: Version, Token: "s3cret-token"}},
		{"Welcome", Welcome{Version: Version, Facts: Facts{
			Hostname:      "uwu-app-7d9f",
			Addresses:     []netip.Addr{netip.MustParseAddr("10.244.0.10"), netip.MustParseAddr("fd00:10:244::a")},
			SearchDomains: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
			Ndots:         5,
			Options:       []string{"timeout:2", "attempts:3"},
			IncomingError: "iptables: Permission denied (you must be root)",
		}}},
		{"Refused", Refused{Code: RefuseVersion, Reason: "protocol version 9 is not supported"}},
		{"DialTCP", DialTCP{Timeout: 30 * time.Second, Dst: netip.MustParseAddrPort("10.96.0.10:8080")}},
		{"DialTCP-ipv6", DialTCP{Timeout: 1500 * time.Millisecond, Dst: netip.MustParseAddrPort("[fd00:10:96::a]:443")}},
		{"DialUDP", DialUDP{Timeout: 5 * time.Second, Dst: netip.MustParseAddrPort("10.96.0.10:53")}},
		{"DialUDP-ipv6", DialUDP{Timeout: 250 * time.Millisecond, Dst: netip.MustParseAddrPort("[fd00:10:96::a]:5353")}},
		{"DNS", DNS{Timeout: 5 * time.Second, Query: goldenQuery}},
		{"Ping", Ping{}},
		{"Result", Result{Class: ClassHostUnreachable, Message: "dial tcp 10.96.0.10:8080: connect: no route to host", Data: []byte{0xde, 0xad, 0xbe, 0xef}}},
		{"Result-env", Result{Class: ClassOK, Data: env}},
		{"Abort", Abort{StreamID: 0x01020305}},
		{"Subscribe", Subscribe{Mode: ModeSteal, Port: 8080, Linger: 2500 * time.Millisecond, Owner: "0123456789abcdef", Label: "alice@laptop",
			Filter: HTTPFilter{Kind: FilterAnyOf, Filters: []HTTPFilter{
				{Kind: FilterPath, Pattern: "^/api"},
				{Kind: FilterAllOf, Filters: []HTTPFilter{
					{Kind: FilterMethod, Pattern: "POST"},
					{Kind: FilterHeader, Pattern: "^x-user: alice$"},
				}},
			}}}},
		{"Subscribe-mirror", Subscribe{Mode: ModeMirror, Port: 9999, Linger: time.Second, Owner: "fedcba9876543210", Label: "bob@ci"}},
		{"Incoming", Incoming{Mode: ModeSteal, Port: 80, Src: netip.MustParseAddrPort("10.244.0.11:41234"), Dst: netip.MustParseAddrPort("10.244.0.10:80")}},
		{"Incoming-ipv6", Incoming{Mode: ModeMirror, Port: 443, Src: netip.MustParseAddrPort("[fd00:10:244::b]:50000"), Dst: netip.MustParseAddrPort("[fd00:10:244::a]:443")}},
		{"Env", Env{}},
		{"Retire", Retire{}},
		{"Refused-retiring", Refused{Code: RefuseRetiring, Reason: "this agent is leaving with its last client"}},
		{"DNSStream", DNSStream{}},
		{"DNSQuery", DNSQuery{ID: 0x0a0b0c0d, Timeout: 5 * time.Second, Query: goldenQuery}},
		{"DNSAnswer", DNSAnswer{ID: 0x0a0b0c0d, Answer: goldenAnswer}},
		{"DNSAnswer-failure", DNSAnswer{ID: 7, Class: ClassTimeout, Message: "read answer from 10.96.0.10:53/udp: i/o timeout"}},
	}
}

// goldenEnv is the environment carried by Result-env.
var goldenEnv = []string{"PATH=/usr/bin:/bin", "GREETING=hello=there", "EMPTY=", "UNI=ü"}

// goldenQuery is a DNS query for uwu-service.default.svc.cluster.local A,
// id 0x1234, recursion desired, written out by hand so the file does not
// depend on a DNS library's packing.
var goldenQuery = func() []byte {
	q := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range strings.Split("uwu-service.default.svc.cluster.local", ".") {
		q = append(append(q, byte(len(label))), label...)
	}
	return append(q, 0, 0, 1, 0, 1) // root, type A, class IN
}()

// goldenAnswer answers goldenQuery: the same question, one A record
// 10.96.0.20 with TTL 30, the name compressed to a pointer at offset 12.
var goldenAnswer = func() []byte {
	a := append([]byte(nil), goldenQuery...)
	a[2], a[3] = 0x81, 0x80 // response, recursion desired and available
	a[7] = 1                // one answer
	a = append(a, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4)
	return append(a, 10, 96, 0, 20)
}()

// goldenDatagram is the payload of datagram.hex: a UDP payload framed as
// WriteDatagram frames it on a DialUDP stream.
var goldenDatagram = []byte("uwu datagram\x00\xff")

// TestGoldenMessagesCoverEveryType fails when the decoder accepts a
// message type that no golden file pins, so a new message cannot ship
// without one.
func TestGoldenMessagesCoverEveryType(t *testing.T) {
	covered := map[Type]bool{}
	for _, g := range goldenMessages() {
		covered[g.msg.Type()] = true
	}
	known := 0
	for v := range 256 {
		typ := Type(v)
		if _, _, err := parseHeader([]byte{byte(typ), 0, 0, 0, 0}); err != nil {
			continue // the decoder does not know this type
		}
		known++
		if !covered[typ] {
			t.Errorf("message type %s (%d) has no golden file: add a value to goldenMessages and run with -update", typ, v)
		}
	}
	if known == 0 {
		t.Fatal("the decoder accepts no message type at all")
	}
}

// TestGoldenMessages checks that each value encodes to exactly its golden
// bytes and that the golden bytes decode to exactly the value.
func TestGoldenMessages(t *testing.T) {
	want := map[string]bool{"datagram.hex": true}
	for _, g := range goldenMessages() {
		want[g.file+".hex"] = true
		t.Run(g.file, func(t *testing.T) {
			frame, err := Append(nil, g.msg)
			if err != nil {
				t.Fatalf("encode %+v: %v", g.msg, err)
			}
			golden := goldenBytes(t, g.file, fmt.Sprintf("%s %+v", g.msg.Type(), g.msg), HeaderSize, frame)
			if !bytes.Equal(frame, golden) {
				t.Errorf("encoding %s differs from %s.hex:\n got %x\nwant %x", g.msg.Type(), g.file, frame, golden)
			}
			got, n, err := Decode(golden)
			if err != nil {
				t.Fatalf("decode %s.hex: %v", g.file, err)
			}
			if n != len(golden) {
				t.Errorf("decode %s.hex took %d of its %d bytes", g.file, n, len(golden))
			}
			if !reflect.DeepEqual(got, g.msg) {
				t.Errorf("decode %s.hex:\n got %#v\nwant %#v", g.file, got, g.msg)
			}
			streamed, err := ReadMessage(bytes.NewReader(golden))
			if err != nil || !reflect.DeepEqual(streamed, g.msg) {
				t.Errorf("ReadMessage of %s.hex = %#v, %v; want %#v", g.file, streamed, err, g.msg)
			}
		})
	}
	// The environment inside Result-env is itself a wire format.
	t.Run("Result-env data", func(t *testing.T) {
		m, _, err := Decode(goldenBytes(t, "Result-env", "", 0, nil))
		if err != nil {
			t.Fatal(err)
		}
		vars, err := DecodeEnv(m.(Result).Data)
		if err != nil || !reflect.DeepEqual(vars, goldenEnv) {
			t.Errorf("DecodeEnv of Result-env's data = %q, %v; want %q", vars, err, goldenEnv)
		}
	})
	t.Run("datagram", func(t *testing.T) {
		var buf bytes.Buffer
		if err := WriteDatagram(&buf, goldenDatagram); err != nil {
			t.Fatal(err)
		}
		golden := goldenBytes(t, "datagram", fmt.Sprintf("datagram %q", goldenDatagram), 2, buf.Bytes())
		if !bytes.Equal(buf.Bytes(), golden) {
			t.Errorf("WriteDatagram differs from datagram.hex:\n got %x\nwant %x", buf.Bytes(), golden)
		}
		p := make([]byte, MaxDatagramSize)
		n, err := ReadDatagram(bytes.NewReader(golden), p)
		if err != nil || !bytes.Equal(p[:n], goldenDatagram) {
			t.Errorf("ReadDatagram of datagram.hex = %q, %v; want %q", p[:n], err, goldenDatagram)
		}
	})
	// A file nobody checks would rot unnoticed.
	entries, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("%s/%s belongs to no golden value: delete it or add its value", goldenDir, e.Name())
		}
	}
}

// goldenBytes returns the bytes of testdata/golden/<name>.hex; with
// -update and a non-nil encoded, it first writes encoded there, labelled
// with what it holds, its first head bytes (the frame header) on a line
// of their own.
func goldenBytes(t *testing.T, name, label string, head int, encoded []byte) []byte {
	t.Helper()
	path := filepath.Join(goldenDir, name+".hex")
	if *update && encoded != nil {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, formatHex(label, head, encoded), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	b, err := parseHex(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// formatHex writes a frame as the golden files hold it: comment lines
// with #, then the bytes in hex, the first head bytes (a frame's header,
// a datagram's length) on a line of their own and the rest 16 a line.
func formatHex(label string, head int, b []byte) []byte {
	var out strings.Builder
	fmt.Fprintf(&out, "# %s\n", label)
	out.WriteString("# Generated by go test ./agent/proto -run TestGolden -update; see golden_test.go.\n")
	line := func(chunk []byte) {
		for i, c := range chunk {
			if i > 0 {
				out.WriteByte(' ')
			}
			fmt.Fprintf(&out, "%02x", c)
		}
		out.WriteByte('\n')
	}
	line(b[:head])
	for rest := b[head:]; len(rest) > 0; {
		n := min(16, len(rest))
		line(rest[:n])
		rest = rest[n:]
	}
	return []byte(out.String())
}

// parseHex reads hex bytes separated by white space; lines starting with
// # are comments.
func parseHex(raw []byte) ([]byte, error) {
	var digits strings.Builder
	for i, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		for _, f := range strings.Fields(l) {
			if len(f)%2 != 0 {
				return nil, fmt.Errorf("line %d: %q is not a whole number of hex bytes", i+1, f)
			}
			digits.WriteString(f)
		}
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		return nil, fmt.Errorf("not hex: %w", err)
	}
	return b, nil
}
