package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/trafficpolice/trafficpolice/agent/tunneltls"
)

// ErrFingerprintMismatch is returned (wrapped, with a
// *tunneltls.MismatchError that names both keys) when the agent's key is
// not the pinned one. The client sent nothing but its TLS handshake.
var ErrFingerprintMismatch = errors.New("the agent's key does not match the pinned fingerprint")

// ErrAgentWithoutTLS is returned (wrapped) when a client that pins a key
// reaches an agent that serves in clear.
var ErrAgentWithoutTLS = errors.New("the agent does not serve TLS")

// secure runs the TLS handshake on conn when the client pins a key, and
// returns the connection the Hello goes on: the TLS one, or conn itself
// without a pin. The token is sent only after this returned, so only to
// an agent that proved it holds the pinned key.
func (c *Client) secure(ctx context.Context, conn net.Conn) (net.Conn, error) {
	if c.tls == nil {
		return conn, nil
	}
	tc := tls.Client(conn, c.tls)
	err := tc.HandshakeContext(ctx)
	if err == nil {
		return tc, nil
	}
	var mismatch *tunneltls.MismatchError
	var notTLS tls.RecordHeaderError
	switch {
	case errors.As(err, &mismatch):
		return nil, fmt.Errorf("agent at %s: %w: %w; no token was sent. If the agent's key was replaced on purpose, "+
			"pin the new one (`trafficpolice agent fingerprint --tls-key FILE` on the agent's host prints it) with "+
			"--agent-fingerprint, agent.fingerprint or the token file's second line; if not, something else answers at "+
			"that address", c.where(), ErrFingerprintMismatch, mismatch)
	case errors.As(err, &notTLS):
		return nil, fmt.Errorf("agent at %s: %w: it answered in clear (it was started without --tls-key, or is older "+
			"than TLS support); start it with --tls-key FILE and pin that key: %w", c.where(), ErrAgentWithoutTLS, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return nil, fmt.Errorf("agent at %s hung up during the TLS handshake (an agent without --tls-key that predates "+
			"TLS support does; or its handshake places are all taken): %w", c.where(), err)
	}
	return nil, fmt.Errorf("TLS handshake with agent at %s: %w", c.where(), err)
}
