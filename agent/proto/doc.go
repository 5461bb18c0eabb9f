// Package proto is the tunnel protocol that trafficpolice speaks with its
// agent: the messages, their binary encoding, and the framing of UDP
// datagrams on a stream. Both sides (package agent and package
// agent/client) use it; it does no networking and no file I/O of its own
// beyond reading and writing frames on the io.Reader/io.Writer it is given.
//
// # Transport
//
// A client opens one TCP connection to the agent, shakes hands on it (see
// Handshake), and then runs a session of github.com/hashicorp/yamux's wire
// protocol over it (the client is the yamux client), spoken by agent/mux:
// the same bytes as yamux without its goroutine hand-offs per frame, so a
// peer still running yamux keeps working. When the agent has a TLS key (a
// direct --agent-address), everything below runs inside TLS 1.3 on that
// connection: the client checks the agent's key against the fingerprint
// it pins (package agent/tunneltls) before it sends its Hello. Through a
// Kubernetes port-forward, which rides the API server's TLS, the agent has
// none and the connection carries the frames in clear. The frames are
// the same either way, so TLS needs no new Version; an agent tells the
// two apart by the connection's first byte (22, a TLS handshake record;
// 1, a Hello). An agent with a key answers a Hello in clear with Refused
// (code 2, saying to pin its key); one without answers a ClientHello with
// a Refused in clear, which a TLS client reports as an agent without TLS. Every flow the router sends to the pod
// is one yamux stream. The tunnel carries payload only: TCP bytes and UDP
// datagrams, never IP packets or TCP segments.
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
// protocol is versioned, so new fields come with a new Version. A new
// message that an older peer can do without (Env, DNSStream) needs none.
//
// # Handshake (on the bare connection, before yamux)
//
//	Hello   (1)  client → agent   version u16, token str
//	Welcome (2)  agent → client   version u16, facts Facts
//	Refused (3)  agent → client   code u8 (1 token, 2 version), reason str
//
// Facts is hostname str, addresses list(addr), search domains list(str),
// ndots u8, options list(str), incoming error str: what the sandbox copies
// from the pod's /etc/resolv.conf, hostname and interface addresses, and
// (version 2) why the agent cannot steal or mirror incoming traffic, empty
// when it can, so that a run that needs it fails at its start.
//
// The client sends Hello as the first bytes of the connection and waits
// for the answer. Nothing is buffered for a peer before its token is
// checked (version 3): the agent reads one Hello frame of at most
// MaxHelloSize body bytes within its handshake timeout (a few seconds),
// holds at most a fixed number of connections in that state (more are
// closed at once), and only after Welcome starts yamux, with its stream
// windows and backlog. The agent compares the token in constant time; a
// wrong or missing token (or an unsupported version) gets Refused and the
// connection is closed. A connection whose first byte is 0 (yamux's
// version, as clients of versions 1 and 2 sent) is closed with a note in
// the agent's log.
//
// After Welcome both ends run yamux; the first stream the client opens is
// the control stream. It stays open for the life of the tunnel and
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
// Result. (A client resolves on one stream for all its queries when the
// agent knows how: see DNS on one stream.)
//
// # Incoming traffic (version 2)
//
// A client subscribes to a port of the pod on a stream of its own:
//
//	Subscribe (10) client → agent   mode u8 (1 steal, 2 mirror), port u16,
//	                                linger u32 (ms, 0 = agent default),
//	                                owner str, label str, filter HTTPFilter
//
// The agent answers with a Result: ClassOK when the port's nat rules are in
// place, otherwise a failure whose message says why (another client's
// unfiltered steal holds the port — the message names its label —, the
// filter does not compile, iptables failed). After ClassOK the stream stays
// open and idle: the client closing it (FIN) ends the subscription at once;
// the tunnel dropping ends it after linger (or the agent's communication
// timeout), unless a client with the same owner subscribes the same port again
// before (a reconnection), which takes it over. A subscription with the
// same owner and port as a live one replaces it.
//
// HTTPFilter is kind u8, then by kind: 0 none (nothing); 1 header, 2 path,
// 3 method: pattern str; 4 all_of, 5 any_of: list(HTTPFilter) of at least
// one member, nested at most MaxFilterDepth levels. Header patterns are
// regular expressions (RE2) matched case-insensitively against each
// "Name: Value" line; path patterns against the request's path without its
// query; a method pattern is a method name compared case-insensitively.
// With a filter, HTTP/1.x requests are decided one by one on keep-alive
// connections; a connection that does not start with an HTTP/1.x request
// (HTTP/2, TLS, raw TCP) passes through to the pod's app whole.
//
// For each connection (steal without filter, mirror without filter) or each
// connection that has a request for the client (with a filter), the agent
// opens a stream to the client:
//
//	Incoming (11)  agent → client   mode u8, port u16, src addrport, dst addrport
//
// The client connects to its local app and answers with a Result (ClassOK,
// or the failure); then the stream carries the connection's bytes (or the
// matching requests, one after another) to the app and, for steal, the
// app's bytes back. For mirror the client discards the app's answers and
// writes nothing after the Result. Half-closes travel as yamux FINs, as for
// DialTCP.
//
// # The target's environment
//
// A client asks for the environment of the target's process (the pod's
// app, as it really runs: the image's variables, the spec's, the
// downward API's) on a stream of its own:
//
//	Env (12)  client → agent   (empty)
//
// The agent answers with one Result and closes the stream. On ClassOK,
// data is the environment as /proc/PID/environ holds it: KEY=VALUE entries,
// each followed by a NUL byte (see EncodeEnv and DecodeEnv); otherwise
// message says why it could not be read. Env needs no new Version: an
// older agent does not know the type, fails to decode the request and
// closes the stream without a Result, which the client reports as
// "unsupported" so that its caller can fall back to other sources.
//
// # DNS on one stream
//
// A stream per query costs a stream's opening and closing frames and a
// goroutine on each end for every lookup. Instead, a client opens one
// stream per tunnel for all its queries:
//
//	DNSStream (13) client → agent   (empty)
//
// The agent answers with a Result (ClassOK); from then on the stream
// carries, in the usual frames, queries to the agent and answers back:
//
//	DNSQuery  (14) client → agent   id u32, timeout u32 (ms, 0 = agent default), query rest
//	DNSAnswer (15) agent → client   id u32, class u8, message str, answer rest
//
// The id is the client's, unique among the stream's queries in flight and
// never 0; it is not the DNS message's own ID, which apps choose and may
// share. The agent resolves queries concurrently and answers each as soon
// as it is resolved, in any order, with the id of its query; class,
// message and answer mean what a DNS request's Result says. A query or
// answer is at most MaxDNSMessageSize bytes. The client keeps at most
// MaxDNSInFlight queries unanswered, counting a query whose caller gave up
// until its answer comes (the agent answers every query, within the
// query's timeout); the agent reads no further ahead than that many
// unanswered queries. Anything else on the stream, or an answer whose id
// is not in flight, is a protocol error that ends the stream; the client
// then resolves on a stream per query until it reconnects.
//
// DNSStream needs no new Version: an agent that does not know it fails to
// decode it and closes the stream without a Result, or answers with a
// failure; either way the client resolves with a DNS stream per query on
// that tunnel, and tries DNSStream again on the next.
package proto
