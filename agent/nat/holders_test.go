package nat

import (
	"slices"
	"strings"
	"testing"
)

func TestParseAgentIDsFindsEachListeningAgentOnce(t *testing.T) {
	unix := `Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 101 @trafficpolice-agent-abc123
0000000000000000: 00000003 00000000 00000000 0001 03 102 @trafficpolice-agent-abc123
0000000000000000: 00000002 00000000 00010000 0001 01 103 @trafficpolice-agent-def456
0000000000000000: 00000002 00000000 00010000 0001 01 104 /run/containerd/containerd.sock
0000000000000000: 00000002 00000000 00010000 0001 01 105 @trafficpolice-agent-
0000000000000000: 00000002 00000000 00000000 0002 01 106
`
	ids, err := parseAgentIDs(strings.NewReader(unix))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"abc123", "def456"}; !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
}

func TestHoldersAnswerIsBounded(t *testing.T) {
	long := strings.Repeat("x", 1000)
	labels := make([]string, 40)
	for i := range labels {
		labels[i] = long
	}
	b := boundHolders(Holders{80: labels})
	if len(b[80]) != maxLabelsPerPort || len(b[80][0]) != 256 {
		t.Fatalf("bounded to %d labels of %d bytes, want %d of 256", len(b[80]), len(b[80][0]), maxLabelsPerPort)
	}
}
