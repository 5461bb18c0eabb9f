// Package kernelpath hands the flows that the policy sends local to the
// kernel, so that they cost what the kernel route costs instead of a trip
// through the router's userspace TCP/IP.
//
// A veth pair joins the sandbox to the host. Inside the sandbox, routing
// rules (ip rule: destination range, ipproto, dport) apply policy.Steps:
// the kernel picks a connection's route, and its source address, when the
// connection starts, so a local step's flows leave through the veth with
// the veth's address and the host masquerades them as it would an app of
// its own. Every other flow keeps the main table's default route to the
// router, which still decides it. The router alone knows names: an address
// that the sandbox's DNS has answered with is left to it (Path.Named), so
// rules that name hosts hold.
//
// The host must forward between the veth and the interface a destination
// is reached through: the kernel path takes only destinations whose host
// route's interface has forwarding on, and not the host's own addresses,
// and leaves the rest to the router. Nothing global changes on the host: the
// veth's own forwarding flag, two FORWARD rules and a MASQUERADE rule, all
// tagged with the run's id so that a killed run's are found
// (RemoveLeftovers).
package kernelpath
