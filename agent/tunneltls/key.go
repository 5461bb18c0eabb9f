package tunneltls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// pemType is the block type LoadOrCreateKey writes: PKCS #8, which holds
// either kind of key.
const pemType = "PRIVATE KEY"

// LoadOrCreateKey reads the agent's private key from path, a PEM file
// holding an Ed25519 or ECDSA P-256 key (PKCS #8, or SEC 1 "EC PRIVATE
// KEY" as openssl writes it). When path does not exist it generates an
// Ed25519 key and writes it there with mode 0600; created says so. A key
// file that others may read is refused: whoever reads it can pose as the
// agent.
func LoadOrCreateKey(path string) (key crypto.Signer, created bool, err error) {
	if path == "" {
		return nil, false, errors.New("TLS key: no file given: pass --tls-key FILE (created if missing)")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err := createKey(path)
		return key, err == nil, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("read TLS key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("read TLS key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, false, fmt.Errorf("TLS key %s has mode %04o: others may read it and pose as the agent; run chmod 600 %s", path, perm, path)
	}
	key, err = parseKey(b)
	if err != nil {
		return nil, false, fmt.Errorf("TLS key %s: %w", path, err)
	}
	return key, false, nil
}

// createKey generates an Ed25519 key and writes it to path, which must
// not exist (O_EXCL: two agents started at once do not overwrite each
// other's key).
func createKey(path string) (crypto.Signer, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate TLS key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode TLS key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create TLS key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: pemType, Bytes: der}); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("write TLS key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("write TLS key %s: %w", path, err)
	}
	return key, nil
}

// parseKey decodes the first PEM block of b as an Ed25519 or ECDSA P-256
// private key.
func parseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block: want an Ed25519 or ECDSA P-256 private key in PEM (\"PRIVATE KEY\" or \"EC PRIVATE KEY\")")
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case pemType:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key: want \"PRIVATE KEY\" or \"EC PRIVATE KEY\"", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("decode private key: %w", err)
	}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on curve %s: want P-256 or an Ed25519 key", k.Curve.Params().Name)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%T keys are not supported: want Ed25519 or ECDSA P-256", k)
}
