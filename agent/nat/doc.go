// Package nat writes the pod's nat rules for steal and mirror. While it redirects at least one
// port, an agent has rules of its own per IP family, named for its id
// (ChainPrefix + id), hooked into nat prerouting (connections from other
// hosts) and output (from the pod itself, over loopback or to its own
// address). They first let through packets that carry Mark (the
// agent's own sockets: pass-through and outgoing dials), then redirect,
// per subscribed port, new TCP connections (SYNs) to a local address of
// the pod to the agent's listener. nat sees only the first packet of a
// connection, so connections open before a rule exists keep going where
// they went.
//
// Two backends write the same rules behind one interface (Rules): the
// iptables binaries (chains in the nat table), or nf_tables netlink (a
// table per family) for pods without an iptables binary, such as the
// agent's own image. New picks one; SweepStale removes what dead agents
// left, telling them from live ones by a liveness socket (HoldLiveness).
package nat
