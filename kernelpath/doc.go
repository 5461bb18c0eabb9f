// Package kernelpath hands the flows that the policy sends local to the
// kernel, so that they cost what the kernel route costs instead of a trip
// through the router's userspace TCP/IP.
//
// A veth pair joins the sandbox to the host. Inside the sandbox an
// nftables chain on the output hook applies policy.Steps to each new IPv4
// TCP or UDP connection and marks the local ones (packet mark and
// conntrack mark, so a connection keeps the path its first packet took);
// a routing rule sends marked packets over the veth, where the sandbox
// masquerades them to its veth address and the host masquerades them
// again, as it would an app of its own. Every other flow keeps the
// default route to the router, which still decides it: the router is the
// only one that knows names, so an address that the sandbox's DNS has
// answered with is left to it (Path.Named).
//
// The host must forward between the veth and the interface a destination
// is reached through; the kernel path takes only destinations whose host
// route's interface has forwarding on (or that are the host's own), and
// leaves the rest to the router. Nothing global is changed on the host: the
// veth's own forwarding flag, two FORWARD rules and a MASQUERADE rule, all
// tagged with the run's id so that a killed run's are found (RemoveLeftovers).
package kernelpath
