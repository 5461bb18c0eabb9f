// Package netnstest gives tests real network namespaces and veth pairs,
// made with package netns and removed when the test ends, and the one way
// for a test to say what it needs (root, a command on PATH): an unmet need
// fails the test under CI=true, where everything must be installed, and
// skips it elsewhere, so a developer without root still runs the rest.
//
// It is for tests and the test harnesses (test/cluster, test/e2e) only.
// Every name it makes carries a random suffix, so parallel tests and test
// binaries never meet, and every cleanup checks that what it removed is
// gone. It takes a small TB rather than testing.TB so that a program (the
// demo) driving a harness can use it too.
//
// It also helps tests check that trafficpolice's namespaces
// live beside other tools' without harm: it runs a test in a mount
// namespace of its own whose /run is fresh (the state of a machine just
// booted, made without touching the host's), and it makes and deletes
// namespaces the way other tools do (vishvananda/netns' NewNamed and
// DeleteNamed, as containerd's CRI does for every pod).
package netnstest

// TB is the part of testing.TB these helpers use. *testing.T, *testing.B
// and test/cluster's TB satisfy it.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
}
