// Package router is the sandbox's userspace router: it terminates the app's
// TCP and UDP flows in gVisor's netstack on the host side of the sandbox's
// TUN device, asks the policy where each flow goes, and joins it to a socket
// opened from the host (local), through the agent (remote) or inside the
// sandbox (the app's own loopback ports). It also answers the sandbox's DNS,
// remembering which names produced which address, resolves the rules' host
// names so that a rule matches their addresses however the app got them,
// and writes the flow log.
//
// It never configures namespaces, links or firewalls: it is handed a link
// endpoint (the TUN's fd, or an in-memory twin in tests) and dial functions.
package router
