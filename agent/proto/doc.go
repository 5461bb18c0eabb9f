// Package proto is the tunnel protocol that trafficpolice speaks with its
// agent: the messages, their binary encoding, and the framing of UDP
// datagrams on a stream. Both sides (package agent and package
// agent/client) use it; it does no networking and no file I/O of its own
// beyond reading and writing frames on the io.Reader/io.Writer it is given.
//
// # Transport
//
// A client opens one TCP connection to the agent and runs a
// github.com/hashicorp/yamux session over it (the client is the yamux
// client). Every flow the router sends to the pod is one yamux stream. The
// tunnel carries payload only: TCP bytes and UDP datagrams, never IP packets
// or TCP segments.
//
// # Frames
//
// Every message is one frame:
//
//	type    uint8     which message (see Type)
//	length  uint32    big-endian length of body, at most MaxBodySize
//	body    [length]  the message's fields, in the order listed below
//
// Field encodings inside a body, all big-endian:
//
//	u8, u16, u32   unsigned integers of 1, 2, 4 bytes
//	str            u16 length, then that many bytes (UTF-8 by convention)
//	addr           u8 length (4 or 16), then the IP address bytes
//	addrport       addr, then u16 port
//	list(X)        u16 count, then count values of X
//	rest           all remaining bytes of the body
//
// A body with bytes left over after its last field, a length that runs past
// the body, or an unknown type or error class is a decoding error: the
// protocol is versioned, so new fields come with a new Version.
//
// # Handshake (the first stream, which stays open as the control stream)
//
//	Hello   (1)  client → agent   version u16, token str
//	Welcome (2)  agent → client   version u16, facts Facts
//	Refused (3)  agent → client   code u8 (1 token, 2 version), reason str
//
// Facts is hostname str, addresses list(addr), search domains list(str),
// ndots u8, options list(str): what the sandbox copies from the pod's
// /etc/resolv.conf, hostname and interface addresses.
//
// The agent compares the token in constant time; a wrong or missing token
// (or an unsupported version) gets Refused and the connection is closed.
// After Welcome the first stream stays open for the life of the tunnel and
// carries only Abort messages, in both directions:
//
//	Abort   (9)  either way       stream id u32
//
// From the client, Abort means the app closed the flow entirely (not just
// its sending half): the agent closes the pod-side socket once the bytes
// already sent on that stream are written (the client sends its FIN
// first). From the agent, Abort means the pod-side peer reset the
// connection: the client reports ECONNRESET and closes the stream, and the
// agent holds its own end of the stream open until then (a few seconds at
// most), so that the app does not mistake an early FIN for a clean end.
// The stream id is yamux's, which both ends of a stream share.
//
// # Flows (every later stream)
//
// A flow stream starts with one request from the client; the agent answers
// with one Result:
//
//	DialTCP (4)  client → agent   timeout u32 (ms, 0 = agent default), dst addrport
//	DialUDP (5)  client → agent   timeout u32 (ms, 0 = agent default), dst addrport
//	DNS     (6)  client → agent   timeout u32 (ms, 0 = agent default), query rest
//	Ping    (7)  client → agent   (empty)
//	Result  (8)  agent → client   class u8, message str, data rest
//
// Class 0 (ClassOK) is success; the other classes say how the pod-side
// operation failed (refused, host or network unreachable, timeout, name not
// found, other) and message carries the agent's error text. For DNS, data
// is the raw answer message, whole (SRV, TXT and all); for the others data
// is empty. A loopback dst is the pod's own loopback (its sidecars).
//
// After a successful Result the stream carries payload only. For DialTCP,
// the raw bytes of the connection in both directions; a stream half-close
// (yamux FIN) is a TCP half-close. For DialUDP, datagrams, each written as
// u16 length followed by that many bytes (see WriteDatagram); the stream's
// datagrams are exchanged with dst only. DNS and Ping streams end after the
// Result.
package proto
