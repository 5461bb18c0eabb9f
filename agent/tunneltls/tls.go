package tunneltls

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// ServerName is the name in the agent's certificate and the name the
// client asks for. Nothing checks it: the pin is the trust.
const ServerName = "trafficpolice-agent"

// ServerConfig is the agent's TLS configuration: TLS 1.3 only, with a
// certificate for key signed by key itself, made now. It also returns
// the key's fingerprint, for the agent to print.
func ServerConfig(key crypto.Signer) (*tls.Config, Fingerprint, error) {
	fp, err := FingerprintOf(key.Public())
	if err != nil {
		return nil, Fingerprint{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, Fingerprint{}, fmt.Errorf("certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: ServerName},
		DNSNames:     []string{ServerName},
		// Clients ignore the dates (they pin the key); the range only
		// keeps other tools that look at the certificate quiet.
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.AddDate(10, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, Fingerprint{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	}, fp, nil
}

// MismatchError is a handshake with an agent whose key is not the pinned
// one. The client aborts the handshake: nothing of its own was sent.
type MismatchError struct {
	Want, Got Fingerprint
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("the agent's key is %s, but %s is pinned", e.Got, e.Want)
}

// ClientConfig is the client's TLS configuration: TLS 1.3 only, and the
// agent's certificate accepted when, and only when, its public key has
// the fingerprint pin (a *MismatchError otherwise). The chain, names and
// dates are not checked, hence InsecureSkipVerify: VerifyConnection does
// the whole check, during the handshake, before the client sends anything
// but its handshake messages.
func ClientConfig(pin Fingerprint) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         ServerName,
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the agent presented no certificate")
			}
			got := fingerprintOfSPKI(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
			if !got.Equal(pin) {
				return &MismatchError{Want: pin, Got: got}
			}
			return nil
		},
	}
}
