// Package policy decides where each flow of the sandboxed app goes: stays in
// the sandbox, out from the host (local), through the agent (remote), or
// nowhere (block). It implements mirrord's outgoing-filter grammar and
// semantics (ARCHITECTURE §4.2) plus our block list, and decides which side
// resolves a DNS name.
//
// It is pure: no sockets, no netlink, no root, no imports of ours. Everything
// it needs about the running sandbox (the app's listening ports, the names a
// destination address stands for) arrives as input; it lists the rules'
// host names (RuleNames) for the router to resolve.
package policy
