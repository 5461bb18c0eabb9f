// Package e2e runs trafficpolice end to end in the namespace "cluster" of
// package cluster: the real CLI, the real agent in a pod's namespace reached
// through a port-forward-like relay, real servers and a real DNS server.
package e2e
