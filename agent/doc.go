// Package agent is the server end of the tunnel: it runs inside the target
// pod's network namespace and does, from there, what a client of
// trafficpolice asks over its tunnel (see package agent/proto for the
// messages):
//
//   - tcp.go: DialTCP, a TCP connection from the pod, relayed byte for byte;
//   - udp.go: DialUDP, a connected UDP socket, datagrams relayed both ways;
//   - dns.go: DNS, a raw query answered from the pod's /etc/hosts or
//     forwarded to the nameservers of its /etc/resolv.conf;
//   - Ping, answered at once.
//
// Each client gets its own tunnel state (its flows), dropped with every
// socket it opened when the tunnel closes. Clients authenticate with a
// shared token.
//
// The agent must not decide where traffic goes (the router's policy does
// that on the client side), must not expand search domains (the app's own
// resolver does, with the pod's search list copied into the sandbox), and
// must not carry IP packets: only payload.
package agent
