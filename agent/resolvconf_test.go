package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseResolvConfReadsWhatThePodUses(t *testing.T) {
	rc := parseResolvConf([]byte(`# written by kubelet
search default.svc.cluster.local svc.cluster.local cluster.local.
nameserver 10.96.0.10
nameserver fd00::a ; second
nameserver not-an-ip
options ndots:5 timeout:2 attempts:3 rotate edns0
`))
	want := resolvConf{
		Nameservers: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53"), netip.MustParseAddrPort("[fd00::a]:53")},
		Search:      []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
		Ndots:       5,
		Options:     []string{"timeout:2", "attempts:3", "rotate", "edns0"},
		Timeout:     2 * time.Second,
		Attempts:    3,
	}
	if !reflect.DeepEqual(rc, want) {
		t.Errorf("parseResolvConf:\n got %+v\nwant %+v", rc, want)
	}
	if got := rc.servers(); !reflect.DeepEqual(got, []string{"10.96.0.10:53", "[fd00::a]:53"}) {
		t.Errorf("servers() = %v", got)
	}
}

func TestParseResolvConfDefaultsAndOverrides(t *testing.T) {
	rc := parseResolvConf([]byte("search a.example b.example\ndomain only.example\noptions ndots:99 ndots:x timeout:0\n"))
	if !reflect.DeepEqual(rc.Search, []string{"only.example"}) {
		t.Errorf("the last of search/domain wins: got %v", rc.Search)
	}
	if rc.Ndots != maxNdots {
		t.Errorf("ndots:99 is capped at %d, got %d", maxNdots, rc.Ndots)
	}
	if rc.Timeout != defaultDNSTimeout || rc.Attempts != defaultDNSAttempts {
		t.Errorf("bad timeout keeps the defaults: got %s, %d", rc.Timeout, rc.Attempts)
	}
	if empty := parseResolvConf(nil); empty.Ndots != 1 || len(empty.Nameservers) != 0 {
		t.Errorf("empty resolv.conf: %+v", empty)
	}
}

func TestResolvConfFileReloadsWhenChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte("nameserver 10.96.0.10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &resolvConfFile{path: path}
	rc, err := f.get()
	if err != nil || len(rc.Nameservers) != 1 || rc.Nameservers[0].Addr().String() != "10.96.0.10" {
		t.Fatalf("first read: %+v, %v", rc, err)
	}
	if err := os.WriteFile(path, []byte("nameserver 10.96.0.11\nnameserver 10.96.0.12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.checked = time.Time{} // skip the once-per-second check
	if rc, err = f.get(); err != nil || len(rc.Nameservers) != 2 || rc.Nameservers[0].Addr().String() != "10.96.0.11" {
		t.Fatalf("after rewrite: %+v, %v", rc, err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	f.checked = time.Time{}
	if _, err := f.get(); err == nil || !strings.Contains(err.Error(), "read resolv.conf") {
		t.Errorf("after removal: %v, want an error reading resolv.conf", err)
	}
}
