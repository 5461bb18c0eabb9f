package gobuild

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindModuleWalksUpToTrafficpolicesGoMod(t *testing.T) {
	root, err := FindModule(".")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.Abs("../..")
	if root != want {
		t.Fatalf("FindModule(.) = %s, want %s", root, want)
	}
	// Another module's go.mod is not a checkout of trafficpolice.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(other, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := FindModule(sub); err == nil || !strings.Contains(err.Error(), "is not in a checkout of "+Module) {
		t.Fatalf("FindModule in another module: %v", err)
	}
}
