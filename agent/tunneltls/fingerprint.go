package tunneltls

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
)

// fingerprintPrefix names the hash, so that another can follow.
const fingerprintPrefix = "sha256:"

// Fingerprint is the SHA-256 of a public key's DER SubjectPublicKeyInfo:
// what a client pins.
type Fingerprint [sha256.Size]byte

// String is "sha256:" and the hash in unpadded standard base64 (43
// characters), as OpenSSH writes its key fingerprints.
func (f Fingerprint) String() string {
	return fingerprintPrefix + base64.RawStdEncoding.EncodeToString(f[:])
}

// Equal compares in constant time.
func (f Fingerprint) Equal(g Fingerprint) bool {
	return subtle.ConstantTimeCompare(f[:], g[:]) == 1
}

// FingerprintOf is the fingerprint of pub.
func FingerprintOf(pub crypto.PublicKey) (Fingerprint, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Fingerprint{}, fmt.Errorf("encode public key: %w", err)
	}
	return fingerprintOfSPKI(der), nil
}

func fingerprintOfSPKI(der []byte) Fingerprint { return sha256.Sum256(der) }

// ParseFingerprint reads "sha256:" and 43 characters of unpadded base64
// (padding is accepted too), as `trafficpolice agent fingerprint` prints.
func ParseFingerprint(s string) (Fingerprint, error) {
	s = strings.TrimSpace(s)
	const valid = `valid: "sha256:" and 43 base64 characters, as "trafficpolice agent fingerprint --tls-key FILE" prints on the agent's host`
	rest, ok := strings.CutPrefix(s, fingerprintPrefix)
	if !ok {
		return Fingerprint{}, fmt.Errorf("fingerprint %q is not valid: it does not start with %q; %s", s, fingerprintPrefix, valid)
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(rest, "="))
	if err != nil || len(b) != sha256.Size {
		return Fingerprint{}, fmt.Errorf("fingerprint %q is not valid: %s", s, valid)
	}
	return Fingerprint(b), nil
}
