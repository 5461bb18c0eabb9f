package enter

import (
	"strings"
	"testing"
)

func TestSplitIDPicksTheRuntimeSocket(t *testing.T) {
	socket, id, err := SplitID("containerd://0123abcd")
	if err != nil || socket != "/run/containerd/containerd.sock" || id != "0123abcd" {
		t.Fatalf("containerd: %q %q %v", socket, id, err)
	}
	if socket, _, err := SplitID("cri-o://ff"); err != nil || socket != "/var/run/crio/crio.sock" {
		t.Fatalf("cri-o: %q %v", socket, err)
	}
	for in, want := range map[string]string{
		"docker://abc":  `runtime "docker" is not supported`,
		"abc":           "is not RUNTIME://ID",
		"containerd://": "is not RUNTIME://ID",
	} {
		if _, _, err := SplitID(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("SplitID(%q) = %v, want an error with %q", in, err, want)
		}
	}
}
