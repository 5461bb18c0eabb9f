// Package netns creates, enters and removes the sandbox's network namespace
// and sets up what lives inside it: the TUN link the router reads, the
// addresses and default routes that point at it, and the NAT rules that send
// the app's loopback traffic to the router.
//
// It owns the address plan (addrplan.go) that the router and the sandbox
// share. It does no routing decisions and no packet handling: it hands the
// TUN file descriptor over and stops there. Everything that must happen
// inside the namespace is done by SetupSandbox in one step that keeps no
// state outside the namespace, so that it can later move into a rootless
// helper that hands back only the file descriptor.
//
// Namespaces are named and bind-mounted at /run/trafficpolice-netns/NAME,
// a shared mount point that only this package mounts under, and linked
// from /run/netns/NAME, so `ip netns exec NAME ...` works for debugging.
// Nothing is mounted in /run/netns itself: other tools' namespaces there
// (containerd's, vishvananda/netns' NewNamed) are never covered, and no
// bind mount of /run/netns by another tool can cover ours. The test
// harnesses create their namespaces here too, so there is one way.
package netns
