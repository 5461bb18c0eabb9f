// Package policy decides where each flow of the sandboxed app goes: stays in
// the sandbox, out from the host (local), through the agent (remote), or
// nowhere (block). It implements mirrord's outgoing-filter grammar and
// semantics (ARCHITECTURE §4.2) plus our block list, and decides which side
// resolves a DNS name.
//
// It is pure: no sockets, no netlink, no root, no imports of ours. Everything
// it needs about the running sandbox (the app's listening ports, the name a
// destination address was resolved from) arrives as input.
package policy
