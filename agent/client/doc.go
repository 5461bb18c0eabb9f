// Package client is the router's end of the agent's tunnel: it connects to
// an agent, authenticates with the shared token, and turns the router's
// remote flows into tunnel streams (see package agent/proto). A Client
// has what the router needs of a remote side (DialTCP, DialUDP,
// Exchange), and the pod facts the sandbox copies. DNS queries share one
// stream per tunnel, many in flight (proto.DNSStream); with an agent that
// predates it, each query takes a stream of its own.
//
// When the tunnel drops, the flows on it end with ECONNRESET, the client
// reconnects with capped exponential backoff and jitter, and new dials wait
// for the new tunnel up to Options.CommunicationTimeout before they fail
// with ErrAgentUnavailable. Options.OnState hears about each change.
//
// Incoming traffic: Subscribe asks the agent to steal or mirror a pod
// port; the agent then opens one stream per connection (or per connection
// with matching HTTP requests), and the client dials the local app through
// SubscribeOptions.Dial and copies the bytes (for a mirror it drops the
// app's answers). Subscriptions are renewed on every new tunnel, and ended
// by Subscription.Close or Close, which waits for the agent to give the
// port back.
//
// The client must not decide where traffic goes (that is the router's
// policy) and must not know how the agent was started or reached beyond
// the net.Conn its dialer returns (a direct address or a port-forward).
package client
