package sandbox

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/netns"
	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router"
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

	// Two echo connections of 8 bytes each way ("hello N\n"), then a
	// refused one; none matches a rule and there is no agent.
	const rule = "default (no agent or target: local)"
	var opens, closeds int
	for _, rec := range readFlowLog(t, logPath) {
		if src, err := netip.ParseAddrPort(rec.Src); err != nil || src.Addr() != netns.SandboxAddr4.Addr() {
			t.Errorf("flow to %s: src %q, want the sandbox's address %s", rec.Dst, rec.Src, netns.SandboxAddr4.Addr())
		}
		if rec.End.Before(rec.Start) {
			t.Errorf("flow to %s ends (%s) before it starts (%s)", rec.Dst, rec.End, rec.Start)
		}
		switch rec.Dst {
		case open:
			opens++
			if rec.Proto != "tcp" || rec.Route != "local" || rec.Rule != rule || rec.BytesOut != 8 || rec.BytesIn != 8 || rec.Error != "" {
				t.Errorf("open flow %+v: want tcp, local by %q, 8 bytes each way, no error", rec, rule)
			}
		case closed:
			closeds++
			if rec.Proto != "tcp" || rec.Route != "local" || rec.Rule != rule || rec.BytesOut != 0 || rec.BytesIn != 0 || !strings.Contains(rec.Error, "refused") {
				t.Errorf("closed flow %+v: want tcp, local by %q, no bytes, a refused error", rec, rule)
			}
		}
	}
	if opens != 2 || closeds != 1 {
		t.Errorf("flow log has %d flows to %s and %d to %s, want 2 and 1", opens, open, closeds, closed)
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
	// The app connects to its listener at once, before any bypass rule can
	// be in: the router sees the flow and keeps it inside the sandbox.
	recs := readFlowLog(t, logPath)
	if len(recs) != 1 {
		t.Fatalf("flow log has %d records, want the one self-connection: %+v", len(recs), recs)
	}
	rec := recs[0]
	dst, err := netip.ParseAddrPort(rec.Dst)
	if err != nil || dst.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("dst %q, want the app's own 127.0.0.1 listener", rec.Dst)
	}
	if want := fmt.Sprintf("the app listens on port %d", dst.Port()); rec.Proto != "tcp" || rec.Route != "sandbox" || rec.Rule != want ||
		rec.BytesIn != int64(len("me")) || rec.BytesOut != 0 || rec.Error != "" {
		t.Errorf("self-connection %+v: want tcp, route sandbox by %q, 2 bytes in (\"me\"), none out", rec, want)
	}
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
}

// TestAppThatCannotStartExitsAsAShellWould: 127 for a command that is not
// found, 126 for one that cannot be executed, with the shell's message, and
// no error of the sandbox's own.
func TestAppThatCannotStartExitsAsAShellWould(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	for _, tc := range cannotStart(t) {
		r := run(t, nil, ExtraRules{}, []string{tc.argv0})
		if r.err != nil || r.code != tc.code {
			t.Errorf("%s: exit %d, error %v; want exit %d and no error", tc.argv0, r.code, r.err, tc.code)
		}
		contains(t, r.stderr, "trafficpolice: "+tc.msg+"\n")
	}
}

type cannotStartCase struct {
	argv0, msg string
	code       int
}

// cannotStart lists commands that cannot start, with the status and the
// message a shell would give.
func cannotStart(t *testing.T) []cannotStartCase {
	dir := t.TempDir()
	// Searchable by the unprivileged user the app may run as (SUDO_UID).
	must(t, os.Chmod(dir, 0o755))
	notExec := filepath.Join(dir, "not-executable")
	must(t, os.WriteFile(notExec, []byte("#!/bin/sh\necho ran\n"), 0o644))
	return []cannotStartCase{
		{"/nonexistent/app", "/nonexistent/app: no such file or directory", 127},
		{"tp-no-such-command", "tp-no-such-command: command not found", 127},
		{notExec, notExec + ": permission denied", 126},
		{dir, dir + ": is a directory", 126},
	}
}

func TestStaticGoBinaryResolvesThroughTheSandbox(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	probe := probe(t)
	f, err := elf.Open(probe)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s has a program interpreter: not a static binary", probe)
		}
	}
	f.Close()
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	resolv := filepath.Join(dir, "resolv.conf")
	// The name is only in the hosts file the router reads: the sandbox's
	// /etc/hosts does not carry it, its resolv.conf names only the router,
	// and the host-side nameserver answers nothing. Only the router's DNS
	// server can give the answer.
	must(t, os.WriteFile(hosts, []byte("198.51.100.9 only-on-the-host.test\n"), 0o644))
	must(t, os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644))
	r := run(t, nil, ExtraRules{}, []string{"sh", "-c", "grep -c only-on-the-host /etc/hosts; grep nameserver /etc/resolv.conf; " + probe + " resolve only-on-the-host.test"},
		func(o *Options) { o.HostResolvConf, o.HostHosts = resolv, hosts })
	want := "0\nnameserver " + netns.DNSAddr4.String() + "\nnameserver " + netns.DNSAddr6.String() + "\n198.51.100.9\n"
	if r.err != nil || r.code != 0 || r.stdout != want {
		t.Fatalf("exit %d, error %v, output %q; want %q", r.code, r.err, r.stdout, want)
	}
}

func TestSignalToCLIReachesApp(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	cmd := newCmd(cli(t), "sandbox", "run", "-q", "--", "sh", "-c", "trap 'exit 42' INT; trap 'exit 43' TERM; echo ready; while :; do sleep 0.1; done")
	stdout, _ := cmd.StdoutPipe()
	must(t, cmd.Start())
	buf := make([]byte, 6)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("app did not start: %q %v", buf, err)
	}
	// Not from a terminal: only trafficpolice gets the signal, and must
	// pass it on.
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if cmd.ProcessState.ExitCode() != 42 {
		t.Fatalf("exit status %d (%v), want the app's 42", cmd.ProcessState.ExitCode(), err)
	}
}

// readFlowLog reads the flow log, checking that every line carries every
// field (a zero value included).
func readFlowLog(t *testing.T, path string) []router.FlowRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []router.FlowRecord
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
		var rec router.FlowRecord
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("flow log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

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
