package tunneltls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A missing key file is created with mode 0600, and read back as the
// same key.
func TestKeyIsCreatedPrivateAndReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.key")
	k1, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateKey(missing) = %v, %v; want a new key", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("new key file has mode %04o, want 0600", fi.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreateKey(existing) = %v, %v; want the key read back", created, err)
	}
	f1, _ := FingerprintOf(k1.Public())
	f2, _ := FingerprintOf(k2.Public())
	if f1 != f2 {
		t.Errorf("the key read back has fingerprint %s, the new one %s", f2, f1)
	}
}

// A key file others may read is refused, with the fix.
func TestKeyReadableByOthersIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.key")
	if _, _, err := LoadOrCreateKey(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("key with mode 0644: %v; want an error saying chmod 600", err)
	}
}

func writePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ECDSA P-256 keys are read in both encodings openssl writes; other
// curves and RSA are refused by name.
func TestKeyKinds(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	sec1, _ := x509.MarshalECPrivateKey(p256)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(p256)
	pkcs8384, _ := x509.MarshalPKCS8PrivateKey(p384)
	pkcs8rsa, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	for _, tc := range []struct {
		name, typ string
		der       []byte
		wantErr   string
	}{
		{"P-256 SEC 1", "EC PRIVATE KEY", sec1, ""},
		{"P-256 PKCS 8", "PRIVATE KEY", pkcs8, ""},
		{"P-384", "PRIVATE KEY", pkcs8384, "P-384"},
		{"RSA", "PRIVATE KEY", pkcs8rsa, "rsa.PrivateKey"},
		{"certificate", "CERTIFICATE", []byte{1}, `"CERTIFICATE" is not a private key`},
	} {
		k, _, err := LoadOrCreateKey(writePEM(t, tc.typ, tc.der))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr == "" && !k.Public().(*ecdsa.PublicKey).Equal(&p256.PublicKey):
			t.Errorf("%s: another key was read", tc.name)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %v; want an error with %q", tc.name, err, tc.wantErr)
		}
	}
}

// The fingerprint is the SHA-256 of the DER SubjectPublicKeyInfo, written
// and read back as "sha256:" and unpadded base64.
func TestFingerprintFormat(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	sum := sha256.Sum256(spki)
	fp, err := FingerprintOf(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	want := "sha256:" + base64.RawStdEncoding.EncodeToString(sum[:])
	if fp.String() != want || len(fp.String()) != len("sha256:")+43 {
		t.Errorf("fingerprint %s, want %s", fp, want)
	}
	for _, s := range []string{want, want + "=", " " + want + "\n"} {
		if got, err := ParseFingerprint(s); err != nil || got != fp {
			t.Errorf("ParseFingerprint(%q) = %s, %v; want %s", s, got, err, fp)
		}
	}
	for _, bad := range []string{"", "sha256:", want[:20], "md5:" + want[7:], "SHA1:" + want[7:], want + "AAAA"} {
		if _, err := ParseFingerprint(bad); err == nil || !strings.Contains(err.Error(), "trafficpolice agent fingerprint") {
			t.Errorf("ParseFingerprint(%q) = %v; want an error saying what is valid", bad, err)
		}
	}
}

// Over a real TLS 1.3 handshake: the pinned key is accepted, another is a
// *MismatchError naming both, and a TLS 1.2-only client is refused.
func TestPinnedHandshake(t *testing.T) {
	key, _, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	srv, fp, err := ServerConfig(key)
	if err != nil {
		t.Fatal(err)
	}
	otherFP, _ := FingerprintOf(other.Public())
	handshake := func(cfg *tls.Config) error {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		go func() { _ = tls.Server(b, srv).Handshake(); b.Close() }()
		return tls.Client(a, cfg).Handshake()
	}
	if err := handshake(ClientConfig(fp)); err != nil {
		t.Errorf("handshake with the pinned key: %v", err)
	}
	var mm *MismatchError
	if err := handshake(ClientConfig(otherFP)); !errors.As(err, &mm) || mm.Got != fp || mm.Want != otherFP {
		t.Errorf("handshake with another key pinned: %v; want a MismatchError got %s want %s", err, fp, otherFP)
	}
	old := ClientConfig(fp)
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if err := handshake(old); err == nil {
		t.Error("a TLS 1.2 client shook hands; want TLS 1.3 only")
	}
}
