// Package synqueue holds the app's first TCP SYN in the kernel while the
// router dials, so that the router can take a remote connection as a plain
// kernel socket and still keep dial-first: the app's connect() succeeds only
// once the remote end answered, is refused when it refused, and times out
// on the app's own clock when nothing answers.
//
// It exists apart from the router because it is the one piece that speaks
// to netfilter: an nfnetlink_queue client (Open, Queue.Run, Queue.Verdict)
// over mdlayher/netlink, opened inside the sandbox's namespace, and the
// iptables rules that feed it and act on its verdicts (Rules). A SYN that
// leaves by the sandbox's TUN and starts a new connection is queued; the
// router answers with a verdict:
//
//   - accept with Marks.Take: a nat OUTPUT REDIRECT sends the connection to
//     a listener the router owns inside the namespace, where origdst.Of
//     tells which destination the app dialed;
//   - accept with Marks.Refuse: a filter OUTPUT REJECT answers with a RST,
//     so the app's connect() fails with ECONNREFUSED;
//   - drop (after holding the SYN up to the dial's timeout): the app's own
//     SYN timer ends its connect().
//
// Every failure degrades to the path the SYN would have taken without it
// (the TUN and the router's netstack): the NFQUEUE rule bypasses the queue
// when no socket is bound to it, the queue fails open when it is full, a
// packet the parser does not understand and every SYN still held when the
// queue closes are accepted unmarked. It makes no routing decision and
// keeps no state beyond the SYNs it holds: the router decides.
//
// It needs CONFIG_NETFILTER_NETLINK_QUEUE and, for the rules, the xt
// targets NFQUEUE, MARK, REDIRECT, REJECT and the conntrack, mark and
// comment matches (through iptables-nft's compat layer): the native
// nftables queue expression is absent on some kernels, so it is not used.
package synqueue
