package sandbox

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// TestNameRuleHoldsForIPLiteralsAndAliases: a rule naming a host, resolved
// by a real DNS server through the host's resolver, matches an app that
// dials the host's address by literal or through another name of the same
// address — both for a block rule and for a routing rule.
func TestNameRuleHoldsForIPLiteralsAndAliases(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.RequireCommand(t, "dnsmasq", "dnsmasq-base")
	cleanCheck(t)
	svc := newServiceNet(t)
	serveEcho(svc.listen(t, 7000))
	ip := svc.svcIP.String()
	// prod-db and reports are two names of one address, in the host's DNS;
	// the host's search list makes the rule's bare "prod-db" its full name.
	svc.start(t, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
		"--listen-address="+ip, "--pid-file=", "--local=/#/",
		"--host-record=prod-db.svc.test,"+ip, "--host-record=reports.svc.test,"+ip)
	dir := t.TempDir()
	resolv, hosts := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "hosts")
	must(t, os.WriteFile(resolv, []byte("nameserver "+ip+"\nsearch svc.test\n"), 0o644))
	must(t, os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644))
	waitDNS(t, svc)
	probe := probe(t)
	literal := net.JoinHostPort(ip, "7000")
	script := fmt.Sprintf("%[1]s dial %[2]s; %[1]s dial reports:7000; true", probe, literal)

	for _, c := range []struct {
		name  string
		extra ExtraRules
		route string
		error string // in the flow record
	}{
		{"block", ExtraRules{Block: []string{"prod-db"}}, "block", "blocked"},
		// Without an agent a remote flow is refused: the flow log shows the
		// rule sent it remote (before, it went local by default and connected).
		{"remote", ExtraRules{Remote: []string{"prod-db"}}, "remote", "no agent"},
	} {
		t.Run(c.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "flows.jsonl")
			r := run(t, nil, c.extra, []string{"sh", "-c", script}, func(o *Options) {
				o.HostResolvConf, o.HostHosts, o.FlowLog = resolv, hosts, logPath
			})
			if r.err != nil || r.code != 0 {
				t.Fatalf("%+v", r)
			}
			if n := strings.Count(r.stdout, "connection refused"); n != 2 || strings.Contains(r.stdout, "connected") {
				t.Fatalf("want both dials (by literal, by alias) refused:\n%s", r.stdout)
			}
			wantRule := c.name + " prod-db"
			hostsSeen := map[string]bool{}
			for _, rec := range readFlowLog(t, logPath) {
				if rec.Dst != literal {
					continue
				}
				hostsSeen[rec.Host] = true
				if rec.Route != c.route || rec.Rule != wantRule || !strings.Contains(rec.Error, c.error) {
					t.Errorf("flow %+v: want route %s by %q, error about %q", rec, c.route, wantRule, c.error)
				}
			}
			// The literal carries the rule's name; the alias the name the app asked for.
			if !hostsSeen["prod-db"] || !hostsSeen["reports.svc.test"] || len(hostsSeen) != 2 {
				t.Errorf("flow hosts %v, want prod-db (the literal) and reports.svc.test (the alias)", hostsSeen)
			}
		})
	}
}
