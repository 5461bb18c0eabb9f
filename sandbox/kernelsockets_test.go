package sandbox

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/router"
)

// runKernelSocketsScript runs, through the router (--no-kernel-path, so
// that local flows are the router's), an app that echoes over two
// connections to open (IPv4) and one to open6 (IPv6), connects to a
// closed port with a non-blocking connect (Go) and a blocking one (bash),
// to a blocked port, and to an address that never answers; it checks what
// the app saw and returns the flow log.
func runKernelSocketsScript(t *testing.T, svc *serviceNet, open6 netip.AddrPort, opts ...runOpt) []router.FlowRecord {
	t.Helper()
	p := probe(t)
	ip := svc.svcIP.String()
	script := fmt.Sprintf(`%[1]s echo %[2]s:7000 2; %[1]s echo %[3]s 1; %[1]s dial %[2]s:7001; `+
		`bash -c 'exec 3<>/dev/tcp/%[2]s/7001' 2>&1; %[1]s dial %[2]s:7002; %[1]s dial %[4]s:7000; true`,
		p, ip, open6, svc.silentIP)
	logPath := filepath.Join(t.TempDir(), "flows.jsonl")
	opts = append([]runOpt{func(o *Options) { o.FlowLog = logPath; o.NoKernelPath = true }}, opts...)
	r := run(t, nil, ExtraRules{Block: []string{"tcp://" + ip + ":7002"}}, []string{"sh", "-c", script}, opts...)
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	// What the app saw: the destination's own answers, as without us.
	contains(t, r.stdout, "2 echoed")
	contains(t, r.stdout, "1 echoed")
	if n := strings.Count(r.stdout, "connect: connection refused"); n != 2 {
		t.Errorf("%d refused non-blocking connects (closed port, blocked port), want 2:\n%s", n, r.stdout)
	}
	contains(t, r.stdout, "Connection refused") // bash's blocking connect
	contains(t, r.stdout, "i/o timeout")        // the silent address, on the app's own clock
	return readFlowLog(t, logPath)
}

// serviceNet6 gives the service namespace an IPv6 link of its own and
// returns its address there.
func serviceNet6(t *testing.T, svc *serviceNet) netip.Addr {
	t.Helper()
	b := []byte(netnstest.Suffix(t))
	prefix := netip.MustParsePrefix(fmt.Sprintf("fd7b:%02x%02x::/64", b[0], b[1]))
	host, service := prefix.Addr().Next(), prefix.Addr().Next().Next()
	netnstest.Veth(t, nil, svc.ns, []netip.Prefix{netip.PrefixFrom(host, 64)}, []netip.Prefix{netip.PrefixFrom(service, 64)})
	return service
}

// A root run takes the app's TCP connections as kernel sockets, and the app
// still sees the destination's own answer to each: connected once the
// destination accepted, refused when it refused or a rule blocks it,
// silence ending on the app's own timeout. One dial per connect.
func TestKernelSocketsKeepDialFirst(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	serveEcho(svc.listen(t, 7000))
	svc6 := serviceNet6(t, svc)
	ln6 := netnstest.Listen(t, svc.ns, "tcp", net.JoinHostPort(svc6.String(), "7000"))
	serveEcho(ln6)
	open6 := netip.AddrPortFrom(svc6, 7000)

	flows := runKernelSocketsScript(t, svc, open6)
	open4 := svc.svcIP.String() + ":7000"
	closed := svc.svcIP.String() + ":7001"
	blocked := svc.svcIP.String() + ":7002"
	count := map[string]int{}
	for _, rec := range flows {
		if rec.Proto != "tcp" {
			continue
		}
		count[rec.Dst]++
		if rec.Via != router.ViaKernelSocket {
			t.Errorf("flow %+v: via %q, want %q", rec, rec.Via, router.ViaKernelSocket)
		}
		switch rec.Dst {
		case open4, open6.String():
			if rec.BytesOut != 8 || rec.BytesIn != 8 || rec.Error != "" {
				t.Errorf("open flow %+v: want 8 bytes each way, no error", rec)
			}
			if src, err := netip.ParseAddrPort(rec.Src); err != nil || src.Addr().Is4() != (rec.Dst == open4) {
				t.Errorf("open flow %+v: source %q is not of the destination's family", rec, rec.Src)
			}
		case closed:
			if !strings.Contains(rec.Error, "refused") {
				t.Errorf("closed flow %+v: want a refused error", rec)
			}
		case blocked:
			if rec.Route != "block" {
				t.Errorf("blocked flow %+v: want route block", rec)
			}
		}
	}
	// One record per connect: held SYNs are not retransmitted, and the
	// queue hands each SYN over once.
	for dst, want := range map[string]int{open4: 2, open6.String(): 1, closed: 2, blocked: 1} {
		if count[dst] != want {
			t.Errorf("%d flows to %s, want %d (all: %v)", count[dst], dst, want, count)
		}
	}

	// --no-kernel-sockets: the same answers, through the netstack.
	flows = runKernelSocketsScript(t, svc, open6, func(o *Options) { o.NoKernelSockets = true })
	for _, rec := range flows {
		if rec.Via != "" {
			t.Errorf("--no-kernel-sockets: flow %+v: via %q, want none", rec, rec.Via)
		}
	}
}

// The router's listener, where taken connections arrive, is not the app's:
// the app cannot connect to it (its loopback goes to the router, which
// finds no app listener there), and it is not taken for one.
func TestKernelSocketsListenerIsNotTheApps(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	p := probe(t)
	// ss shows the router's listener in the sandbox; the app dials it.
	script := fmt.Sprintf(`port=$(ss -Hltn 'src 127.0.0.1' | awk '{print $4}' | sed 's/.*://' | head -1); `+
		`echo "port=$port"; test -n "$port" && %s dial 127.0.0.1:$port; true`, p)
	r := run(t, nil, ExtraRules{}, []string{"sh", "-c", script})
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if strings.Contains(r.stdout, "port=\n") {
		t.Fatalf("no listener of the router's in the sandbox:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "connected") {
		t.Errorf("the app reached the router's listener:\n%s", r.stdout)
	}
	contains(t, r.stdout, "connection refused")
}

// Connections from one local port to different destinations (Linux's own
// port choice does this) arrive at the router's one listener with the same
// address and port: each still reaches its own destination.
func TestKernelSocketsOneLocalPortManyDestinations(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	svc := newServiceNet(t)
	var addrs []string
	for _, port := range []int{7000, 7001, 7002} {
		serveEcho(svc.listen(t, port))
		addrs = append(addrs, net.JoinHostPort(svc.svcIP.String(), fmt.Sprint(port)))
	}
	logPath := filepath.Join(t.TempDir(), "flows.jsonl")
	r := run(t, nil, ExtraRules{}, append([]string{probe(t), "sameport"}, addrs...),
		func(o *Options) { o.FlowLog = logPath; o.NoKernelPath = true })
	if r.err != nil || r.code != 0 {
		t.Fatalf("%+v", r)
	}
	contains(t, r.stdout, "3 echoed")
	perDst := map[string]int{}
	for _, rec := range readFlowLog(t, logPath) {
		perDst[rec.Dst]++
		if rec.Via != router.ViaKernelSocket || rec.BytesOut != 8 || rec.BytesIn != 8 || rec.Error != "" {
			t.Errorf("flow %+v: want via %s, 8 bytes each way, no error", rec, router.ViaKernelSocket)
		}
	}
	for _, a := range addrs {
		if perDst[a] != 1 {
			t.Errorf("%d flows to %s, want 1 (all: %v)", perDst[a], a, perDst)
		}
	}
}

// A kernel socket costs the router one descriptor more than the netstack's
// connection: near its open-file limit the router leaves new connections
// to the netstack, so that an app holding many connections gets them all.
// Here a limit of 512 and 250 connections held at once: as kernel sockets
// alone they would need over 500 descriptors.
func TestKernelSocketsLeaveTheFileLimitToFlows(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.RequireCommand(t, "prlimit", "util-linux")
	cleanCheck(t)
	svc := newServiceNet(t)
	serveEcho(svc.listen(t, 7000))
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	must(t, os.WriteFile(release, nil, 0o644)) // close them once all are held
	logPath := filepath.Join(dir, "flows.jsonl")
	cmd := exec.Command("prlimit", "--nofile=512:512", cli(t), "sandbox", "run", "-q", "--no-kernel-path", "--flow-log", logPath,
		"--", probe(t), "hold", svc.svcIP.String()+":7000", "250", release)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", trim(string(out)))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	contains(t, string(out), "held 250")
	via := map[string]int{}
	for _, rec := range readFlowLog(t, logPath) {
		via[rec.Via]++ // (their errors: the app closes them all as it exits)
	}
	if via[router.ViaKernelSocket] == 0 || via[""] == 0 || via[router.ViaKernelSocket]+via[""] != 250 {
		t.Errorf("flows by way: %v; want 250, some as kernel sockets, the rest through the netstack", via)
	}
}
