package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

func TestReachesHostLoopbackByLocalRuleOnly(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	ln := hostListener(t)
	serveEcho(ln)
	p := portOf(ln)
	probe := probe(t)

	// Without a rule the host's loopback is private.
	r := run(t, nil, ExtraRules{}, []string{probe, "dial", "127.0.0.1:" + p})
	if r.err != nil || r.code != 1 {
		t.Fatalf("without rule: %+v", r)
	}
	contains(t, r.stdout, "connection refused")

	r = run(t, nil, ExtraRules{Local: []string{":" + p}}, []string{probe, "echo", "127.0.0.1:" + p, "3"})
	if r.err != nil || r.code != 0 {
		t.Fatalf("with --local :%s: %+v", p, r)
	}
	contains(t, r.stdout, "3 echoed")

	cfg := config.Default()
	cfg.Feature.Network.Outgoing.IgnoreLocalhost = true
	r = run(t, cfg, ExtraRules{}, []string{probe, "dial", "localhost:" + p})
	if r.code != 0 {
		t.Fatalf("with ignore_localhost: %+v", r)
	}
}

func TestDefaultLocalWithoutAgentAndTheAppSeesNativeErrors(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	ln := svc.listen(t, 7000)
	serveEcho(ln)
	probe := probe(t)
	open := net.JoinHostPort(svc.svcIP.String(), "7000")
	closed := net.JoinHostPort(svc.svcIP.String(), "7001")
	silent := net.JoinHostPort(svc.silentIP.String(), "7000")

	logPath := filepath.Join(t.TempDir(), "flows.jsonl")
	script := fmt.Sprintf("%[1]s echo %[2]s 2; %[1]s dial %[3]s; %[1]s dial %[4]s; true", probe, open, closed, silent)
	r := run(t, nil, ExtraRules{}, []string{"sh", "-c", script}, func(o *Options) { o.FlowLog = logPath })
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	contains(t, r.stdout, "2 echoed")
	contains(t, r.stdout, "connect: connection refused")
	contains(t, r.stdout, "i/o timeout")

	recs := readFlowLog(t, logPath)
	var sawOpen, sawClosed bool
	for _, rec := range recs {
		if rec["dst"] == open && rec["route"] == "local" && rec["bytes_in"].(float64) > 0 {
			sawOpen = true
		}
		if rec["dst"] == closed && strings.Contains(fmt.Sprint(rec["error"]), "refused") {
			sawClosed = true
		}
	}
	if !sawOpen || !sawClosed {
		t.Fatalf("flow log lacks the open or the closed flow: %v", recs)
	}
}

func TestBlockRefusesQuickly(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	serveEcho(svc.listen(t, 7000))
	probe := probe(t)
	start := time.Now()
	r := run(t, nil, ExtraRules{Block: []string{svc.svcIP.String()}}, []string{probe, "dial", net.JoinHostPort(svc.svcIP.String(), "7000")})
	if r.code != 1 {
		t.Fatalf("%+v", r)
	}
	contains(t, r.stdout, "connection refused")
	t.Logf("whole run with a blocked dial took %v", time.Since(start))
}

func TestUDPAndBlockedUDP(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(t, err)
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("pong:"), buf[:n]...), from)
		}
	}()
	_, p, _ := net.SplitHostPort(pc.LocalAddr().String())
	probe := probe(t)
	r := run(t, nil, ExtraRules{Local: []string{"udp://:" + p}, Block: []string{"udp://:9"}},
		[]string{"sh", "-c", fmt.Sprintf("%[1]s udp 127.0.0.1:%[2]s; %[1]s udp 127.0.0.1:9; true", probe, p)})
	if r.err != nil {
		t.Fatal(r.err)
	}
	contains(t, r.stdout, "udp: pong:ping")
	contains(t, r.stdout, "connection refused")
}

func TestDNSForLocalNamesAndHostsFile(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	svc.start(t, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
		"--listen-address="+svc.svcIP.String(), "--pid-file=",
		"--host-record=web.svc.test,"+svc.svcIP.String()+",fd00::7",
		"--srv-host=_http._tcp.svc.test,web.svc.test,80",
		"--txt-record=info.svc.test,hello from the host side")
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	hosts := filepath.Join(dir, "hosts")
	must(t, os.WriteFile(resolv, []byte("nameserver "+svc.svcIP.String()+"\n"), 0o644))
	must(t, os.WriteFile(hosts, []byte("127.0.0.1 localhost\n192.0.2.44 app-db.hosts.test\n"), 0o644))
	waitDNS(t, svc)

	probe := probe(t)
	script := strings.Join([]string{
		"dig +short +tries=1 A web.svc.test",
		"dig +short +tries=1 AAAA web.svc.test",
		"dig +short +tries=1 SRV _http._tcp.svc.test",
		"dig +short +tries=1 TXT info.svc.test",
		"dig +short +tcp +tries=1 A web.svc.test",
		"dig +short +tries=1 A app-db.hosts.test",
		probe + " resolve app-db.hosts.test",
		probe + " resolve web.svc.test",
	}, "; ")
	r := run(t, nil, ExtraRules{}, []string{"sh", "-c", script}, func(o *Options) {
		o.HostResolvConf, o.HostHosts = resolv, hosts
	})
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	for _, want := range []string{svc.svcIP.String(), "fd00::7", "0 0 80 web.svc.test.", `"hello from the host side"`, "192.0.2.44"} {
		contains(t, r.stdout, want)
	}
}

func waitDNS(t *testing.T, svc *serviceNet) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(svc.svcIP.String(), "53"), time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("dnsmasq did not start")
}

func TestAppsOwnLoopbackListener(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	logPath := filepath.Join(t.TempDir(), "flows.jsonl")
	r := run(t, nil, ExtraRules{}, []string{probe(t), "self"}, func(o *Options) {
		o.FlowLog = logPath
		o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	if r.code != 0 {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("%+v\nflow log: %s", r, b)
	}
	contains(t, r.stdout, "self: me")
}

func TestHundredMegabytesArriveIntact(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	const size = 100 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	sum := sha256.Sum256(data)
	ln := hostListener(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.Write(data)
				c.Close()
			}()
		}
	}()
	r := run(t, nil, ExtraRules{Local: []string{":" + portOf(ln)}}, []string{probe(t), "sha256", "127.0.0.1:" + portOf(ln)})
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	contains(t, r.stdout, fmt.Sprintf("%d %s", size, hex.EncodeToString(sum[:])))
}

func TestTwoHundredConcurrentConnections(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	serveEcho(svc.listen(t, 7000))
	r := run(t, nil, ExtraRules{}, []string{probe(t), "echo", net.JoinHostPort(svc.svcIP.String(), "7000"), "200"})
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	contains(t, r.stdout, "200 echoed")
}

func TestExitStatusAndSignals(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	if r := run(t, nil, ExtraRules{}, []string{"sh", "-c", "exit 7"}); r.code != 7 || r.err != nil {
		t.Fatalf("exit 7: %+v", r)
	}
	if r := run(t, nil, ExtraRules{}, []string{"sh", "-c", "kill -TERM $$"}); r.code != 128+15 {
		t.Fatalf("killed by SIGTERM: %+v", r)
	}
	if r := run(t, nil, ExtraRules{}, []string{"/nonexistent/app"}); r.err == nil && r.code != 127 {
		t.Fatalf("missing command: %+v", r)
	}
}

func TestStaticGoBinaryResolvesThroughTheSandbox(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	resolv := filepath.Join(dir, "resolv.conf")
	must(t, os.WriteFile(hosts, []byte("198.51.100.9 only-on-the-host.test\n"), 0o644))
	must(t, os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644))
	// The sandbox's own /etc/hosts does not carry the host's entries: the
	// answer can only come from the router's DNS server.
	r := run(t, nil, ExtraRules{}, []string{"sh", "-c", "cat /etc/resolv.conf; grep -c only-on-the-host /etc/hosts; " + probe(t) + " resolve only-on-the-host.test"},
		func(o *Options) { o.HostResolvConf, o.HostHosts = resolv, hosts })
	contains(t, r.stdout, "nameserver "+netns.DNSAddr4.String())
	contains(t, r.stdout, "198.51.100.9")
}

func TestKilledRunIsCollected(t *testing.T) {
	netnstest.RequireRoot(t)
	before := cleanCheck(t)
	// Build the real CLI and kill -9 it mid-run.
	bin := filepath.Join(t.TempDir(), "trafficpolice")
	out, err := execCommand("go", "build", "-o", bin, "../cmd/trafficpolice")
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := newCmd(bin, "sandbox", "run", "-q", "--", "sleep", "300")
	must(t, cmd.Start())
	// The run's namespace carries the id of its record, whose pid is the CLI's.
	var id string
	deadline := time.Now().Add(10 * time.Second)
	for id == "" && time.Now().Before(deadline) {
		entries, _ := os.ReadDir(StateDir)
		for _, e := range entries {
			if r, err := readRecord(filepath.Join(StateDir, e.Name())); err == nil && r.PID == cmd.Process.Pid {
				id = r.ID
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if id == "" {
		t.Fatal("the run wrote no record")
	}
	before.add(NamespacePrefix + id)
	// Wait until the app runs inside, then kill the CLI without warning.
	for time.Now().Before(deadline) {
		if pids, _ := processesIn(NamespacePrefix + id); len(pids) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := netns.Open(NamespacePrefix + id); err != nil {
		t.Fatalf("the killed run's namespace should still be there before Collect: %v", err)
	}
	cleaned, err := Collect()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cleaned, id) {
		t.Fatalf("Collect removed %v, not the killed run %s", cleaned, id)
	}
}

func TestSignalToCLIReachesApp(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	bin := filepath.Join(t.TempDir(), "trafficpolice")
	out, err := execCommand("go", "build", "-o", bin, "../cmd/trafficpolice")
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := newCmd(bin, "sandbox", "run", "-q", "--", "sh", "-c", "trap 'exit 42' INT; trap 'exit 43' TERM; echo ready; while :; do sleep 0.1; done")
	stdout, _ := cmd.StdoutPipe()
	must(t, cmd.Start())
	buf := make([]byte, 6)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("app did not start: %q %v", buf, err)
	}
	// Not from a terminal: only trafficpolice gets the signal, and must
	// pass it on.
	cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	if cmd.ProcessState.ExitCode() != 42 {
		t.Fatalf("exit status %d (%v), want the app's 42", cmd.ProcessState.ExitCode(), err)
	}
}

func readFlowLog(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("flow log line %q: %v", line, err)
		}
		for _, k := range []string{"start", "end", "proto", "src", "dst", "route", "rule", "bytes_out", "bytes_in"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("flow log line lacks %q: %s", k, line)
			}
		}
		out = append(out, m)
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ = http.StatusOK
var _ = context.Background

func TestPingIsRoutedLikeAnyFlow(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	ip := svc.svcIP.String()
	r := run(t, nil, ExtraRules{}, []string{"ping", "-c", "1", "-W", "3", ip})
	if r.code != 0 {
		t.Fatalf("ping on the local route: %+v", r)
	}
	contains(t, r.stdout, "1 received")
	r = run(t, nil, ExtraRules{Block: []string{ip}}, []string{"ping", "-c", "1", "-W", "3", ip})
	if r.code == 0 {
		t.Fatalf("ping to a blocked address succeeded: %+v", r)
	}
	contains(t, r.stdout, "Prohibited")
}
