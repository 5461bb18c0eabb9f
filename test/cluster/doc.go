// Package cluster builds, per test, a small "Kubernetes cluster" out of
// Linux network namespaces on this machine, for end-to-end tests and the
// demo (ARCHITECTURE §5).
//
// A cluster is one namespace holding a Linux bridge (the cluster network,
// 10.244.0.0/24 and fd10:244::/64, gateway .1 on the bridge) and one
// namespace per pod, each with a veth into the bridge, its own address, its
// own resolv.conf and hosts files, and processes started in it. A real DNS
// server (dnsmasq) runs in its own pod and answers NAME.default.svc.cluster.local
// for every pod (A only, as in a single-stack cluster), plus the SRV, TXT
// and extra A/AAAA records a test adds; every other name is NXDOMAIN.
// The host namespace gets no link and no route into the cluster: a flow
// that wrongly goes "local" fails instead of passing by accident. The host
// reaches a pod only through Pod.Forward, as a Kubernetes port-forward would.
//
// Everything a cluster creates (namespaces, links, processes, files)
// carries the cluster's unique "tpc-<6 chars>" prefix and is removed in
// the test's Cleanup, also when the test fails. Parallel tests each get
// their own cluster; the same subnet is reused since nothing is shared.
// Processes die with the test binary (Pdeathsig); if the binary dies
// without its cleanups (a -timeout panic), the next New in any test
// binary removes the dead run's namespaces and temp dirs (their names
// carry the owner's PID).
//
// The package is test-only plumbing: it needs root, must never touch the
// host namespace's links, routes or firewall, and must never send traffic
// from the host to a cluster address (with the host's default route such
// packets would leave the machine).
package cluster

// TB is the part of testing.TB the harness uses, so that a program (the
// demo) can drive a cluster as well as a test can. *testing.T satisfies it.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}
