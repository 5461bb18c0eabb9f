// Package agent is the server end of the tunnel: it runs inside the target
// pod's network namespace and does, from there, what a client of
// trafficpolice asks over its tunnel (see package agent/proto for the
// messages):
//
//   - tcp.go: DialTCP, a TCP connection from the pod, relayed byte for byte;
//   - udp.go: DialUDP, a connected UDP socket, datagrams relayed both ways;
//   - dns.go: DNS, a raw query answered from the pod's /etc/hosts or
//     forwarded to the nameservers of its /etc/resolv.conf;
//   - Ping, answered at once;
//   - env.go: Env, the environment of the target's process, read from
//     /proc/PID/environ (Options.TargetPID, else the oldest other process
//     in the agent's PID namespace);
//   - Subscribe (with Options.Incoming): a steal or mirror of a pod port.
//
// Incoming traffic has files of its own: subscribe.go sets it up at start
// (liveness socket, redirect listeners, removal of dead agents' rules)
// and holds each subscription stream; incoming.go keeps every client's
// subscriptions (who holds which port, what a lost tunnel keeps);
// natrules.go says what the nat rules TP-IN-<agent id> do (redirect new
// connections to the agent, let the agent's marked sockets by) and picks
// the backend that writes them: iptables.go (the iptables binaries, nat
// chains) where they work, else nftables.go (nf_tables netlink, a table
// per family; the agent's image has no iptables binary);
// steal.go serves each redirected connection: whole to a stealing client,
// request by request under an HTTP filter (http1.go, httpfilter.go), or
// through to the pod's app; mirror.go makes the bounded copies for
// mirroring clients.
//
// Each client gets its own tunnel state (its flows), dropped with every
// socket it opened when the tunnel closes. Clients authenticate with a
// shared token.
//
// The agent must not decide where traffic goes (the router's policy does
// that on the client side; the client also decides which ports it takes),
// must not change the target's process (it only reads its environment),
// must not expand search domains (the app's own resolver does, with the
// pod's search list copied into the sandbox), must not carry IP packets
// (only payload), must not touch nat rules other than its own chains or
// tables and the jumps to them (and dead agents' ones), and must never let
// a slow mirroring client slow the pod's own traffic.
package agent
