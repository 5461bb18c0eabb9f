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
// Namespaces are named and bind-mounted at /run/netns/NAME, the same way
// `ip netns add` does it, so `ip netns exec NAME ...` works for debugging.
package netns
