// Command bench is `make bench`: it measures trafficpolice's router beside
// the kernel path it replaces, in one run, on this machine, and prints one
// table (or JSON with --json) where every row has the router's figure, the
// kernel's figure for the same route and their ratio.
//
// It builds its own network namespaces (tpb-<id>-pod, tpb-<id>-srv), veth
// links, NAT and servers, builds the trafficpolice binary, and runs its own
// binary again as the load generator ("bench client ...") inside the
// sandbox and, for the kernel figures, in the pod namespace. It removes all
// of it at the end, on Ctrl-C, and (for a killed run) at the next start.
//
// Beside its own paths it measures the peers a user without root would
// otherwise use, pasta and slirp4netns, as the user nobody (peers.go).
//
// It must not assert anything about timing: numbers live here, never in
// tests. It sends traffic only between namespaces it created.
package main
