package agent

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// tlsHandshakeRecord is the first byte of every TLS connection (the record
// type of a ClientHello). A Hello starts with its type, 1, and a yamux
// session with its version, 0: one byte tells the three apart.
const tlsHandshakeRecord = 0x16

// RefusedPlainReason is what an agent that serves TLS tells a client that
// spoke to it without (its Hello and token crossed the network in clear).
const RefusedPlainReason = "this agent serves TLS (it was started with --tls-key) and takes no tunnel in clear: " +
	"pin its key with --agent-fingerprint sha256:... (agent.fingerprint, or the token file's second line); " +
	"`trafficpolice agent fingerprint --tls-key FILE` on the agent's host prints it, and the agent logs it at start"

// secure returns the connection the Hello is read from: c itself for an
// agent without TLS, else the TLS connection over c once its handshake is
// done. It runs under the handshake's deadline and place in s.pending,
// so a peer that stalls the TLS handshake is dropped as one that stalls
// its Hello is; Go's TLS server holds at most a 64 KiB handshake message
// for it meanwhile. A peer that speaks the wrong one of TLS and plain
// gets a refusal it can read, not a silent close.
func (s *Server) secure(ctx context.Context, c net.Conn) (net.Conn, error) {
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		return nil, fmt.Errorf("read the connection's first byte: %w", err)
	}
	pc := &peekedConn{Conn: c, first: first[0], unread: true}
	switch {
	case first[0] == 0:
		return nil, proto.ErrYamuxFirst
	case s.tls == nil && first[0] == tlsHandshakeRecord:
		// A client that pins a key reached an agent without one: it
		// sent its ClientHello and nothing else. It sees an answer
		// that is not TLS, and says so.
		if err := skipRecord(pc); err != nil {
			return nil, fmt.Errorf("a TLS client reached this agent, which serves without TLS: %w", err)
		}
		s.refuse(c, proto.Refused{Code: proto.RefuseVersion, Reason: "this agent serves without TLS (it was started without --tls-key)"})
		return nil, errors.New("a TLS client (one that pins a fingerprint) reached this agent, which serves without TLS: start it with --tls-key FILE")
	case s.tls == nil:
		return pc, nil
	case first[0] == byte(proto.TypeHello):
		// Read the Hello whole, so that closing after the refusal is a
		// FIN the client reads the refusal before, not a reset. Its
		// token is not looked at.
		if _, err := proto.ReadHello(pc); err != nil {
			return nil, err
		}
		s.refuse(c, proto.Refused{Code: proto.RefuseVersion, Reason: RefusedPlainReason})
		return nil, errors.New("a client spoke without TLS to this agent, which serves TLS: refused (it needs --agent-fingerprint)")
	}
	tc := tls.Server(pc, s.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// skipRecord reads the rest of a TLS record whose first byte was peeked:
// its header's length, then that many bytes, discarded.
func skipRecord(r io.Reader) error {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("read TLS record header: %w", err)
	}
	n := int64(binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.CopyN(io.Discard, r, n); err != nil {
		return fmt.Errorf("read TLS record: %w", err)
	}
	return nil
}

// peekedConn is a connection whose first byte was read already: Read
// returns it first.
type peekedConn struct {
	net.Conn
	first  byte
	unread bool
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.unread && len(p) > 0 {
		c.unread = false
		p[0] = c.first
		return 1, nil
	}
	return c.Conn.Read(p)
}
