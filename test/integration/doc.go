// Package integration holds in-process tests, without root, that join
// packages which must not import each other: the router (run by
// router/routertest) and a real agent with its tunnel client over loopback.
//
// They sit here rather than in test/e2e, whose tests run the built CLI in
// the namespace "cluster" of test/cluster and need root, and rather than in
// package router, which must not import the agent even in its tests.
package integration
