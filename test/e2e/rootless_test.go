package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The agent's features from a rootless run: the same assertions as the
// root runs', as an ordinary user the test creates.

func TestRootlessRemoteAndIncoming(t *testing.T) {
	w := newIncomingWorld(t)
	w.rootless(t, w.tags)
	ip := w.target.IP().String()

	t.Run("remote tcp by name and IP, udp, and the cluster's DNS", func(t *testing.T) {
		r := w.sh(t, nil, fmt.Sprintf("id -u; %[1]s read whoami:7000; %[1]s read %[2]s:7000; %[1]s udp whoami:7000; dig +short SRV _whoami._tcp.default.svc.cluster.local",
			w.probe, w.whoami.IP()))
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		contains(t, r.stdout, fmt.Sprint(w.user.UID)+"\n")
		if n := strings.Count(r.stdout, "\nwhoami peer="+ip+":"); n != 2 {
			t.Errorf("want 2 TCP answers naming the pod's address %s, got %d", ip, n)
		}
		contains(t, r.stdout, "udp: whoami peer="+ip+":")
		contains(t, r.stdout, "0 5 7000 whoami.default.svc.cluster.local.")
	})

	t.Run("steal with a header filter", func(t *testing.T) {
		stealing := fmt.Sprintf("stealing pod port %d → app :%d", stolenPort, stolenPort)
		cfg := writeConfig(t, `{"feature":{"network":{"incoming":{"mode":"steal","http_filter":{"header_filter":"^x-user: alice$"}}}}}`)
		r := w.start(t, "rootless-steal", nil, []string{"-f", cfg}, w.tags, fmt.Sprintf(":%d", stolenPort), "local")
		r.waitStderr(t, "✓ "+stealing, 30*time.Second)
		wantAnswer(t, w.get(t, "GET", w.podURL, "/a", "X-User", "alice"), "local GET /a")
		wantAnswer(t, w.get(t, "GET", w.podURL, "/b"), "pod GET /b")
		conn, err := w.target.DialContext(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", stolenPort))
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		r.stop(t)
		contains(t, r.stdout.String(), "local got GET /a")
		wantAnswer(t, w.get(t, "GET", w.podURL, "/after"), "pod GET /after")
		w.wantNoRules(t)
	})
}
