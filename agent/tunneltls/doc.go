// Package tunneltls is the TLS layer of the tunnel to an agent reached at
// a direct address (--agent-address): the agent's key pair, the
// self-signed certificate it serves, and the client's pin on the key's
// fingerprint. It does not touch the protocol: the Hello, with its token,
// travels inside the TLS connection, and only once the client has checked
// the pin, so that an agent with another key learns nothing it can replay.
//
// Trust is a pin, as SSH's known host keys are, not a certificate chain:
// the client compares the SHA-256 of the agent's SubjectPublicKeyInfo
// with the fingerprint it was given ("sha256:" and the hash in unpadded
// standard base64, as Fingerprint writes it) and ignores names, issuers
// and dates. TLS 1.3 only.
package tunneltls
