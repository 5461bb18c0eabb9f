package client

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestSanitizeFactsKeepsResolverFilesOurs(t *testing.T) {
	evil := Facts{
		Hostname:      "pod\nnameserver 203.0.113.66",
		Addresses:     []netip.Addr{netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("::ffff:10.1.0.8"), netip.IPv4Unspecified(), netip.MustParseAddr("ff02::1")},
		SearchDomains: []string{"default.svc.cluster.local", "svc.cluster.local nameserver", "a..b", strings.Repeat("x", 64) + ".io", "cluster.local."},
		Ndots:         5,
		Options:       []string{"timeout:2", "attempts:3\nnameserver 203.0.113.66", "rotate", "edns0 trust-ad"},
	}
	got, dropped := sanitizeFacts(evil)
	want := Facts{
		Addresses:     []netip.Addr{netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("10.1.0.8")},
		SearchDomains: []string{"default.svc.cluster.local", "cluster.local."},
		Ndots:         5,
		Options:       []string{"timeout:2", "rotate"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sanitized facts:\n%+v\nwant:\n%+v", got, want)
	}
	wantDropped := []string{
		`hostname "pod\nnameserver 203.0.113.66"`,
		"address 0.0.0.0", "address ff02::1",
		`search domain "svc.cluster.local nameserver"`, `search domain "a..b"`,
		`search domain "` + strings.Repeat("x", 64) + `…"`,
		`option "attempts:3\nnameserver 203.0.113.66"`, `option "edns0 trust-ad"`,
	}
	if !reflect.DeepEqual(dropped, wantDropped) {
		t.Errorf("dropped:\n%q\nwant:\n%q", dropped, wantDropped)
	}
}

func TestSanitizeFactsBoundsCounts(t *testing.T) {
	var f Facts
	for i := 0; i < 100; i++ {
		f.SearchDomains = append(f.SearchDomains, "d.example")
		f.Options = append(f.Options, "rotate")
	}
	f.Ndots = 99
	got, dropped := sanitizeFacts(f)
	if len(got.SearchDomains) != maxSearchDomains || len(got.Options) != maxOptions || got.Ndots != 0 {
		t.Errorf("kept %d search domains, %d options, ndots %d; want %d, %d, 0", len(got.SearchDomains), len(got.Options), got.Ndots, maxSearchDomains, maxOptions)
	}
	if len(dropped) != 100-maxSearchDomains+100-maxOptions+1 {
		t.Errorf("dropped %d entries", len(dropped))
	}
}

func TestSanitizeFactsKeepsAnOrdinaryPod(t *testing.T) {
	f := Facts{Hostname: "uwu-app-7d9f8c-x2x", Addresses: []netip.Addr{netip.MustParseAddr("10.244.0.12"), netip.MustParseAddr("fd00::12")},
		SearchDomains: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}, Ndots: 5, Options: []string{"timeout:2"},
		IncomingError: "iptables: permission denied"}
	got, dropped := sanitizeFacts(f)
	if !reflect.DeepEqual(got, f) || len(dropped) != 0 {
		t.Errorf("an ordinary pod's facts changed: %+v, dropped %v", got, dropped)
	}
}
