// Package incoming is the agent's side of incoming traffic: it steals or
// mirrors the pod's TCP ports for the clients that subscribe to them.
//
// A Service keeps every tunnel's subscriptions (who holds which port, what
// a lost tunnel keeps for its linger time) and the nat rules that go with
// them (package agent/nat): a port is redirected to the agent's listener
// while at least one subscription holds it. Each redirected connection is
// served whole to a stealing client, request by request under HTTP
// filters (the first matching client takes a request or HTTP/2 stream,
// the rest go to the pod's app), or through to the pod's app; mirroring
// clients get bounded copies that never slow the pod's own traffic: a
// client that lags loses its copies, not the pod its speed.
//
// On an HTTP-filtered port a connection that opens with the HTTP/2
// preface (or upgrades to h2c, when the pod's app speaks it) is
// terminated by the agent's HTTP/2 server and each stream forwarded, by
// the same filters, through an HTTP/2 client connection to the stealing
// client's app or the pod's app (http2.go, http2mirror.go). TLS is never
// terminated: it passes through whole.
//
// Under HTTP/1 filters the agent parses requests strictly where RFC 9112
// says to reject (a Transfer-Encoding without chunked last, Content-Length
// that is not digits or disagrees with itself, both together, obsolete
// line folding, bare CR, a chunk without its CRLF): such a request gets 400
// and the connection closes, since an app behind us could split the bytes
// into requests otherwise than we did. A keep-alive connection idle for
// Options.HTTPIdleTimeout is closed; a head that takes longer than
// Options.HTTPHeadTimeout gets 408.
//
// It must not touch nat rules other than its own and the jumps to them
// (and dead agents' ones), and must not redirect the agent's own ports.
package incoming
