package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router"
)

// kernelPathScript runs `ip route get` for ports 7000 and 7001 of the service,
// then resolves name (through the sandbox's DNS) and asks again for the
// first port, and dials the first port with the probe.
func kernelPathScript(t *testing.T, svc *serviceNet, name string) string {
	p := probe(t)
	ip := svc.svcIP.String()
	return fmt.Sprintf("ip -4 -o route get %[1]s ipproto tcp dport 7000 && ip -4 -o route get %[1]s ipproto tcp dport 7001 && "+
		"%[2]s dial %[1]s:7000 >/dev/null && getent hosts %[3]s >/dev/null && ip -4 -o route get %[1]s ipproto tcp dport 7000", ip, p, name)
}

func TestLocalRulesTakeTheKernelPathAndNamesTheRouter(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	svc.forward(t)
	serveEcho(svc.listen(t, 7000))
	hosts := filepath.Join(t.TempDir(), "hosts")
	must(t, os.WriteFile(hosts, []byte(svc.svcIP.String()+" svc.kernelpath.test\n"), 0o644))
	withHosts := func(o *Options) { o.HostHosts = hosts }
	rules := ExtraRules{Block: []string{fmt.Sprintf("tcp://%s:7001", svc.svcIP)}}
	script := kernelPathScript(t, svc, "svc.kernelpath.test")

	r := run(t, nil, rules, []string{"sh", "-c", script}, withHosts)
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 routes, got %q", r.stdout)
	}
	for i, want := range []string{"dev tpk0", "dev tp0", "dev tp0"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("route %d %q: want %s (local by address: the kernel; blocked: the router; named: the router)", i, lines[i], want)
		}
	}

	// A name whose flows all go local (a remote filter that names another
	// host) keeps the kernel path once the sandbox's DNS has answered.
	r = run(t, nil, ExtraRules{Remote: []string{"other.kernelpath.test"}}, []string{"sh", "-c", script}, withHosts)
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 3 || !strings.Contains(lines[2], "dev tpk0") {
		t.Errorf("a name whose flows all go local: routes %q, want the last through tpk0", r.stdout)
	}

	r = run(t, nil, rules, []string{"sh", "-c", script}, withHosts, func(o *Options) { o.NoKernelPath = true })
	if r.code != 0 {
		t.Fatalf("--no-kernel-path: %+v", r)
	}
	if strings.Contains(r.stdout, "tpk0") {
		t.Errorf("--no-kernel-path still routes to the kernel path:\n%s", r.stdout)
	}
}

// With a flow log the kernel path stays on, and its flows are in the log,
// from the sandbox's conntrack.
func TestFlowLogRecordsTheKernelPathsFlows(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	svc.forward(t)
	serveEcho(svc.listen(t, 7000))
	logPath := filepath.Join(t.TempDir(), "flows.jsonl")
	addr := fmt.Sprintf("%s:7000", svc.svcIP)
	script := fmt.Sprintf("ip -4 -o route get %s ipproto tcp dport 7000 && %s dial %s", svc.svcIP, probe(t), addr)
	r := run(t, nil, ExtraRules{}, []string{"sh", "-c", script}, func(o *Options) { o.FlowLog = logPath })
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if !strings.Contains(r.stdout, "dev tpk0") {
		t.Fatalf("with a flow log the flow did not take the kernel path:\n%s", r.stdout)
	}
	b, err := os.ReadFile(logPath)
	must(t, err)
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec router.FlowRecord
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("flow log line %q: %v", line, err)
		}
		if rec.Dst == addr {
			found = true
			if rec.Via != "kernel" || rec.Route != "local" || rec.Proto != "tcp" || rec.BytesOut == 0 || rec.BytesIn == 0 || rec.Start.IsZero() || rec.End.Before(rec.Start) {
				t.Errorf("record %+v: want via kernel, local, tcp, bytes both ways, start <= end", rec)
			}
		}
	}
	if !found {
		t.Errorf("no record of %s in the flow log:\n%s", addr, b)
	}
}
