package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseEntryValidExamples(t *testing.T) {
	// Every valid example of ARCHITECTURE §4.2, and the IPv6 forms.
	cases := []struct {
		in    string
		proto Proto
		host  string
		pfx   string
		port  uint16
	}{
		{"tcp://1.2.3.0/24:7777", TCP, "", "1.2.3.0/24", 7777},
		{"tcp://[2800:3f0:4001:81e::2004]:7777", TCP, "", "2800:3f0:4001:81e::2004/128", 7777},
		{"tcp://", TCP, "", "", 0},
		{"google.com", AnyProto, "google.com", "", 0},
		{"localhost", AnyProto, "localhost", "", 0},
		{"1.2.3.0/24", AnyProto, "", "1.2.3.0/24", 0},
		{"udp://:7777", UDP, "", "", 7777},
		{":7777", AnyProto, "", "", 7777},
		{"0.0.0.0:53", AnyProto, "", "", 53},
		{"[::1]", AnyProto, "", "::1/128", 0},
		{"[fd00::]/8:443", AnyProto, "", "fd00::/8", 443},
		{"any://App-DB.:5432", AnyProto, "app-db", "", 5432},
		{"UDP://10.1.2.3", UDP, "", "10.1.2.3/32", 0},
		{"1.2.3.4/16", AnyProto, "", "1.2.0.0/16", 0},
	}
	for _, c := range cases {
		e, err := ParseEntry(c.in)
		if err != nil {
			t.Errorf("ParseEntry(%q): %v", c.in, err)
			continue
		}
		if e.Proto != c.proto || e.Host != c.host || e.Port != c.port {
			t.Errorf("ParseEntry(%q) = proto %v host %q port %d; want %v %q %d", c.in, e.Proto, e.Host, e.Port, c.proto, c.host, c.port)
		}
		got := ""
		if e.Prefix.IsValid() {
			got = e.Prefix.String()
		}
		if got != c.pfx {
			t.Errorf("ParseEntry(%q) prefix = %q, want %q", c.in, got, c.pfx)
		}
		// The canonical form parses back to the same entry.
		again, err := ParseEntry(e.String())
		if err != nil || again.Proto != e.Proto || again.Host != e.Host || again.Prefix != e.Prefix || again.Port != e.Port {
			t.Errorf("round trip of %q via %q: %+v, %v", c.in, e.String(), again, err)
		}
	}
}

func TestParseEntryInvalidExamplesSayWhy(t *testing.T) {
	cases := map[string]string{
		"tcp://google.com/24:7777": "only after an IP address",
		"meow://":                  `unknown protocol "meow"`,
		":7777udp://":              "protocol must come first",
		"":                         "empty entry",
		"tcp://1.2.3.4:0":          "from 1 to 65535",
		"tcp://1.2.3.4:99999":      "from 1 to 65535",
		"1.2.3.4/33":               "from 0 to 32",
		"::1":                      "in brackets",
		"[::1":                     `missing "]"`,
		"[nothost]":                "not an IPv6 address",
		"bad host!":                "contains",
		"/24":                      "needs an IP address",
		"1.2.3":                    "not a valid IPv4",
		"tcp://udp://x":            "only once",
		"x:":                       "missing port",
	}
	for in, want := range cases {
		_, err := ParseEntry(in)
		if err == nil {
			t.Errorf("ParseEntry(%q) succeeded, want error containing %q", in, want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEntry(%q) = %v, want it to contain %q", in, err, want)
		}
	}
}

func TestEntryErrorNamesListAndEntry(t *testing.T) {
	_, err := New(Rules{Local: []string{"app-db", "meow://"}, TCP: true, UDP: true})
	if err == nil || !strings.Contains(err.Error(), `local[1] "meow://"`) {
		t.Fatalf("got %v", err)
	}
	_, err = New(Rules{Local: []string{}, TCP: true})
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty list: got %v", err)
	}
	_, err = New(Rules{Local: []string{"a"}, Remote: []string{"b"}})
	if err == nil || !strings.Contains(err.Error(), "cannot both be set") {
		t.Fatalf("local+remote: got %v", err)
	}
}

func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{"tcp://1.2.3.0/24:7777", "tcp://[2800:3f0:4001:81e::2004]:7777", "google.com", ":7777", "udp://:53", "[fd00::]/8:1", "meow://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEntry(s)
		if err != nil {
			return
		}
		// Whatever parses must render to a form that parses to the same entry.
		again, err := ParseEntry(e.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", e.String(), s, err)
		}
		if again.Proto != e.Proto || again.Host != e.Host || again.Prefix != e.Prefix || again.Port != e.Port {
			t.Fatalf("round trip of %q: %+v != %+v", s, again, e)
		}
		if e.Prefix.IsValid() && e.Prefix != e.Prefix.Masked() {
			t.Fatalf("prefix not masked: %v", e.Prefix)
		}
		_ = netip.Prefix{}
	})
}
