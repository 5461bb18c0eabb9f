package proto

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("  from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvToken, "from-env")
	if tok, err := LoadToken(file); err != nil || tok != "from-file" {
		t.Errorf("LoadToken(file) = %q, %v; want from-file", tok, err)
	}
	if tok, err := LoadToken(""); err != nil || tok != "from-env" {
		t.Errorf("LoadToken(\"\") = %q, %v; want from-env", tok, err)
	}
	t.Setenv(EnvToken, "")
	if _, err := LoadToken(""); err == nil || !strings.Contains(err.Error(), EnvToken) {
		t.Errorf("no token anywhere: %v; want an error naming %s", err, EnvToken)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadToken(empty); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty token file: %v", err)
	}
}

// One file serves both ends: the agent reads its token from the first
// line, a client the fingerprint it pins from the second.
func TestTokenFileSecondLineIsTheFingerprint(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	both := write("both", "tok\n\n  sha256:abc \n")
	if tok, fp, err := LoadTokenFile(both); err != nil || tok != "tok" || fp != "sha256:abc" {
		t.Errorf("LoadTokenFile = %q, %q, %v; want tok, sha256:abc", tok, fp, err)
	}
	if tok, err := LoadToken(both); err != nil || tok != "tok" {
		t.Errorf("LoadToken = %q, %v; want the first line only", tok, err)
	}
	three := write("three", "a\nb\nc\n")
	if _, _, err := LoadTokenFile(three); err == nil || !strings.Contains(err.Error(), "3 lines") {
		t.Errorf("three lines: %v; want an error saying what the file may hold", err)
	}
}
