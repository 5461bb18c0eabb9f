package netnstest

import (
	"context"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
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

// CheckKeepAliveOnceItLasts checks that the socket a flow opens to port
// has no keepalive while the flow is young and gets it once the flow has
// lasted: setAfter sets how long a flow must last first (and returns what
// restores it), dial opens a flow.
func CheckKeepAliveOnceItLasts(t *testing.T, port uint16, setAfter func(time.Duration) (restore func()), dial func(context.Context) (io.Closer, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name  string
		after time.Duration
		want  bool
	}{
		{"a young flow", time.Hour, false},
		{"a flow that lasted", 50 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer setAfter(tc.after)()
			c, err := dial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for {
				armed := KeepAliveArmed(t, port)
				if armed == tc.want {
					return
				}
				if !tc.want || ctx.Err() != nil {
					t.Fatalf("keepalive on the socket to port %d: %v, want %v", port, armed, tc.want)
				}
				time.Sleep(20 * time.Millisecond) // polling for the timer, not synchronising
			}
		})
	}
}
