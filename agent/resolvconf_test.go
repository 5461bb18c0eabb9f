package agent

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
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
	if rc, err := f.get(); err != nil || len(rc.Nameservers) != 2 {
		t.Errorf("after removal: %+v, %v; want the last file read", rc, err)
	}
	never := &resolvConfFile{path: path}
	if _, err := never.get(); err == nil || !strings.Contains(err.Error(), "read resolv.conf") {
		t.Errorf("a file never read: %v, want an error reading resolv.conf", err)
	}
}

// In Job mode the agent reads the pod's resolver files through
// /proc/PID/root of the target container's process. When the container
// restarts that path is gone, the pod is not: the agent keeps answering
// with what it read.
func TestResolverFilesOutliveTheTargetProcess(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 10.96.0.10\nsearch ns.svc.cluster.local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte("10.0.0.7 alias-of-the-pod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := exec.Command("sleep", "600")
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	root := fmt.Sprintf("/proc/%d/root", target.Process.Pid)
	rcf := &resolvConfFile{path: root + filepath.Join(dir, "resolv.conf")}
	hf := &hostsFile{path: root + filepath.Join(dir, "hosts")}
	if rc, err := rcf.get(); err != nil || len(rc.Search) != 1 {
		t.Fatalf("before: %+v, %v", rc, err)
	}
	if tab, err := hf.get(); err != nil || len(tab.byName["alias-of-the-pod."]) != 1 {
		t.Fatalf("before: %v, %v", tab.byName, err)
	}
	target.Process.Kill()
	target.Wait()
	if _, err := os.Stat(rcf.path); err == nil {
		t.Fatalf("%s is still there after its process ended", rcf.path)
	}
	rcf.checked, hf.checked = time.Time{}, time.Time{}
	if rc, err := rcf.get(); err != nil || len(rc.Search) != 1 || rc.Search[0] != "ns.svc.cluster.local" {
		t.Errorf("after the process ended: %+v, %v; want what was read", rc, err)
	}
	if tab, err := hf.get(); err != nil || len(tab.byName["alias-of-the-pod."]) != 1 {
		t.Errorf("after the process ended: %v, %v; want what was read", tab.byName, err)
	}
}

// FuzzParseResolvConf: whatever the pod's resolv.conf says, the agent's
// resolver settings stay within glibc's bounds.
func FuzzParseResolvConf(f *testing.F) {
	f.Add([]byte("nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"))
	f.Add([]byte("nameserver fe80::1%eth0\ndomain example.com\noptions timeout:99999999999999 attempts:100 rotate\n"))
	f.Add([]byte("options ndots:-1 timeout:0 attempts:x\n# comment\n;x\nnameserver\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rc := parseResolvConf(b)
		if len(rc.Nameservers) > maxNameservers {
			t.Errorf("%d nameservers", len(rc.Nameservers))
		}
		if rc.Ndots < 0 || rc.Ndots > maxNdots {
			t.Errorf("ndots %d", rc.Ndots)
		}
		if rc.Timeout <= 0 || rc.Timeout > maxDNSTimeout*time.Second {
			t.Errorf("timeout %s", rc.Timeout)
		}
		if rc.Attempts < 1 || rc.Attempts > maxDNSAttempts {
			t.Errorf("attempts %d", rc.Attempts)
		}
		if len(rc.Search) > maxSearch || len(rc.Options) > maxSearch {
			t.Errorf("%d search domains, %d options", len(rc.Search), len(rc.Options))
		}
	})
}
