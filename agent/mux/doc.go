// Package mux multiplexes streams over one connection with yamux's wire
// protocol (github.com/hashicorp/yamux, spec.md), so that either end may
// still be hashicorp/yamux: no negotiation, the bytes are the same.
//
// What differs is how the frames move. yamux hands every frame to a send
// goroutine and every received frame to the reading stream through
// channels: several scheduler wake-ups per round trip. Here a writer
// encodes its frame and writes it to the connection itself; writers that
// arrive while another holds the connection queue their frame and the
// holder writes the whole queue in one vectored write (flat combining).
// One receive goroutine parses frames and copies a stream's data into
// pooled fixed-size chunks that the stream's Read releases as it goes, so
// a fast flow keeps no large buffer and nothing is cleared needlessly.
//
// Everything the peer can make us hold is bounded: a stream's buffered
// data by the window we advertised (more is a protocol error that ends the
// session), streams waiting for Accept by the backlog (more are reset), open
// streams by MaxStreams, and answers to the peer's pings by a small queue.
//
// The package does not implement yamux's stream-close timer or GoAway on
// demand: callers close streams explicitly and end a session with Close.
package mux
