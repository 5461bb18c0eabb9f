package k8s

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
)

// The one cluster of this test binary, started by TestMain.
var (
	cluster  *Cluster
	startErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		// Each test says why it skips (or fails, in CI).
		os.Exit(m.Run())
	}
	cluster, startErr = Start(os.Stderr)
	if startErr != nil {
		fmt.Fprintf(os.Stderr, "k8s harness: the cluster did not start: %v\n", startErr)
	}
	code := m.Run()
	if startErr == nil {
		cluster.Stop()
	}
	os.Exit(code)
}

// need returns the cluster, or stops the test: it skips with -short and,
// outside CI, without root; it fails in CI (CI=true) and when the
// cluster did not start.
func need(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no Kubernetes cluster")
	}
	netnstest.RequireRoot(t)
	if startErr != nil {
		t.Fatalf("no cluster: %v", startErr)
	}
	return cluster
}
