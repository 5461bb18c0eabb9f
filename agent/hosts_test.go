package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestParseHosts(t *testing.T) {
	tab := parseHosts([]byte(`127.0.0.1 localhost
::1 localhost ip6-localhost
10.1.2.3 uwu-app-7d9f.default.svc uwu-app-7d9f  # the pod itself
10.1.2.4 Sidecar.Local
fe80::1%eth0 scoped
garbage line
10.1.2.5
`))
	cases := map[string][]netip.Addr{
		"localhost.":                {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		"uwu-app-7d9f.":             {netip.MustParseAddr("10.1.2.3")},
		"uwu-app-7d9f.default.svc.": {netip.MustParseAddr("10.1.2.3")},
		"sidecar.local.":            {netip.MustParseAddr("10.1.2.4")},
	}
	for name, want := range cases {
		if got := tab.byName[name]; !reflect.DeepEqual(got, want) {
			t.Errorf("byName[%q] = %v, want %v", name, got, want)
		}
	}
	if _, ok := tab.byName["scoped."]; ok {
		t.Error("a scoped address was taken")
	}
	if got := tab.byAddr["3.2.1.10.in-addr.arpa."]; got != "uwu-app-7d9f.default.svc." {
		t.Errorf("PTR for 10.1.2.3 = %q, want the first name", got)
	}
}

func TestHostsFileReloadsWhenChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("10.0.0.1 one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &hostsFile{path: path}
	tab, err := h.get()
	if err != nil || len(tab.byName["one."]) != 1 {
		t.Fatalf("first read: %v, %v", tab.byName, err)
	}
	if err := os.WriteFile(path, []byte("10.0.0.2 two two-alias\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.checked = time.Time{} // skip the once-per-second check
	tab, err = h.get()
	if err != nil || len(tab.byName["two."]) != 1 || tab.byName["one."] != nil {
		t.Fatalf("after rewrite: %v, %v", tab.byName, err)
	}
	missing := &hostsFile{path: filepath.Join(t.TempDir(), "none")}
	if tab, err := missing.get(); err != nil || len(tab.byName) != 0 {
		t.Errorf("missing hosts file: %v, %v; want an empty table", tab.byName, err)
	}
}
