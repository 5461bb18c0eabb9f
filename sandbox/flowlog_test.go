package sandbox

import (
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// A flow log that cannot be written (a full file system: /dev/full) must
// not pass in silence: the run ends with an error that says so, the app's
// traffic and exit status untouched.
func TestRunReportsAFlowLogItCouldNotWrite(t *testing.T) {
	netnstest.RequireRoot(t)
	cleanCheck(t)
	ln := hostListener(t)
	serveEcho(ln)
	p := portOf(ln)
	r := run(t, nil, ExtraRules{Local: []string{":" + p}}, []string{probe(t), "echo", "127.0.0.1:" + p, "1"},
		func(o *Options) { o.FlowLog = "/dev/full" })
	contains(t, r.stdout, "1 echoed")
	if r.code != 0 {
		t.Errorf("the app's exit status is %d, want 0", r.code)
	}
	if r.err == nil || !strings.Contains(r.err.Error(), "no space left on device") || !strings.Contains(r.err.Error(), "/dev/full") {
		t.Fatalf("a run whose flow log could not be written ended with %v, want an error naming the file and the reason", r.err)
	}
}
