package netnstest

import (
	"os/exec"
	"strconv"
	"strings"
)

// KeepAliveArmed reports whether an established TCP socket of this
// namespace to port has its keepalive timer armed (`ss -o` shows
// timer:(keepalive,...)).
func KeepAliveArmed(t TB, port uint16) bool {
	t.Helper()
	ss := RequireCommand(t, "ss", "iproute2")
	out, err := exec.Command(ss, "-tnoH", "state", "established", "dport", "=", ":"+strconv.Itoa(int(port))).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	return strings.Contains(string(out), "keepalive")
}
