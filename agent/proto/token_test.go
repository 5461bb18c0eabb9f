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
