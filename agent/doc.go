// Package agent is the server end of the tunnel: it runs inside the target
// pod's network namespace and does, from there, what a client of
// trafficpolice asks over its tunnel (package agent/proto has the
// messages). This package is the server and its outgoing side: a TCP
// connection dialed from the pod and relayed byte for byte, a connected
// UDP socket, DNS queries (on a stream each, or many in flight on one
// DNS stream) answered from the pod's /etc/hosts or forwarded to the
// nameservers of its /etc/resolv.conf, the environment of the
// target's process, and the pod facts (hostname, addresses, resolver
// settings) sent in the Welcome. Incoming traffic (steal and mirror) is
// package agent/incoming, which the server starts when Options.Incoming
// says so; its nat rules are package agent/nat.
//
// Each client gets its own tunnel state (its flows, its control stream),
// dropped with every socket it opened when the tunnel closes. Clients
// authenticate with a shared token.
//
// The agent must not decide where traffic goes (the router's policy does
// that on the client side; the client also decides which ports it takes),
// must not change the target's process (it only reads its environment),
// must not expand search domains (the app's own resolver does, with the
// pod's search list copied into the sandbox), must not carry IP packets
// (only payload), and must never let a slow mirroring client slow the
// pod's own traffic.
package agent
