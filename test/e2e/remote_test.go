package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/router"
)

func pattern(i int) byte { return byte(i*7 + i>>11) }

// One cluster for the whole remote story: building it costs more than
// the checks.
func TestRemoteRoutesThroughTheAgent(t *testing.T) {
	w := newWorld(t)
	ip := w.target.IP().String()
	hostPort := hostLoopback(t)
	w.sidecarOn(t, hostPort) // the same port number on the pod's loopback

	t.Run("tcp by short name, FQDN and IP, seen from the pod's address", func(t *testing.T) {
		r := w.sh(t, nil, fmt.Sprintf("%[1]s read whoami:7000; %[1]s read whoami.default.svc.cluster.local:7000; %[1]s read %[2]s:7000",
			w.probe, w.whoami.IP()))
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		if n := strings.Count(r.stdout, "whoami peer="+ip+":"); n != 3 {
			t.Fatalf("want 3 answers naming the pod's address %s, got %d", ip, n)
		}
	})

	t.Run("udp connected and unconnected, from the pod's address", func(t *testing.T) {
		r := w.sh(t, nil, fmt.Sprintf("%[1]s udp whoami:7000; %[1]s udpto %[2]s:7000", w.probe, w.whoami.IP()))
		contains(t, r.stdout, "udp: whoami peer="+ip+":")
		contains(t, r.stdout, "udpto: whoami peer="+ip+":")
		contains(t, r.stdout, fmt.Sprintf("from %s:7000", w.whoami.IP()))
	})

	t.Run("dig SRV, TXT, AAAA and DNS over TCP", func(t *testing.T) {
		r := w.sh(t, nil, "dig +short SRV _whoami._tcp.default.svc.cluster.local; dig +short TXT whoami-info.default.svc.cluster.local; "+
			"dig +short AAAA whoami6.default.svc.cluster.local; dig +short +tcp +search whoami; cat /etc/resolv.conf")
		contains(t, r.stdout, "0 5 7000 whoami.default.svc.cluster.local.")
		contains(t, r.stdout, `"served by the cluster"`)
		contains(t, r.stdout, w.whoami.IPv6().String())
		contains(t, r.stdout, w.whoami.IP().String())
		contains(t, r.stdout, "search default.svc.cluster.local svc.cluster.local cluster.local")
		contains(t, r.stdout, "ndots:5")
	})

	t.Run("closed remote port refused, unanswered one times out", func(t *testing.T) {
		r := w.sh(t, nil, fmt.Sprintf("%[1]s dial whoami:7009; %[1]s dial whoami:7002; true", w.probe))
		contains(t, r.stdout, "connection refused")
		contains(t, r.stdout, "i/o timeout")
	})

	t.Run("loopback reaches the pod's sidecar by default", func(t *testing.T) {
		r := w.run(t, nil, w.probe, "read", fmt.Sprintf("127.0.0.1:%d", hostPort))
		contains(t, r.stdout, "sidecar peer=127.0.0.1:")
		notContains(t, r.stdout, "host peer")
	})

	t.Run("ignore_localhost reaches the host's loopback", func(t *testing.T) {
		cfg := writeConfig(t, `{"feature":{"network":{"outgoing":{"ignore_localhost":true}}}}`)
		r := w.run(t, []string{"-f", cfg}, w.probe, "read", fmt.Sprintf("127.0.0.1:%d", hostPort))
		contains(t, r.stdout, "host peer=")
	})

	t.Run("a local rule sends its matches to the host, the rest remote", func(t *testing.T) {
		r := w.sh(t, []string{"--local", fmt.Sprintf(":%d", hostPort)},
			fmt.Sprintf("%[1]s read 127.0.0.1:%[2]d; %[1]s read whoami:7000", w.probe, hostPort))
		contains(t, r.stdout, "host peer=")
		contains(t, r.stdout, "whoami peer="+ip+":")
	})

	t.Run("a blocked name, resolved by the cluster's DNS, is blocked by IP literal and by alias", func(t *testing.T) {
		// prod-db and reports are two services in front of the whoami pod.
		w.c.AddService(t, "prod-db", w.whoami)
		w.c.AddService(t, "reports", w.whoami)
		logPath := filepath.Join(t.TempDir(), "flows.jsonl")
		literal := fmt.Sprintf("%s:7000", w.whoami.IP())
		r := w.sh(t, []string{"--block", "prod-db", "--flow-log", logPath},
			fmt.Sprintf("%[1]s read %[2]s; %[1]s read reports:7000; true", w.probe, literal))
		if n := strings.Count(r.stdout, "connection refused"); n != 2 || strings.Contains(r.stdout, "whoami peer=") {
			t.Fatalf("want both reads (by literal, by alias) refused, got:\n%s", r.stdout)
		}
		recs := readFlows(t, logPath)
		blocked := 0
		for _, rec := range recs {
			if rec.Dst == literal && rec.Route == "block" && rec.Rule == "block prod-db" {
				blocked++
			}
		}
		if blocked != 2 {
			t.Fatalf("flow log: %d flows to %s blocked by \"block prod-db\", want 2: %+v", blocked, literal, recs)
		}
	})

	t.Run("100 MB arrive intact", func(t *testing.T) {
		h := sha256.New()
		buf := make([]byte, 1<<20)
		for off := 0; off < 100<<20; off += len(buf) {
			for i := range buf {
				buf[i] = pattern(off + i)
			}
			h.Write(buf)
		}
		r := w.run(t, nil, w.probe, "sha256", "whoami:7003")
		contains(t, r.stdout, fmt.Sprintf("%d %s", 100<<20, hex.EncodeToString(h.Sum(nil))))
	})

	t.Run("500 concurrent remote connections", func(t *testing.T) {
		r := w.run(t, nil, w.probe, "echo", "whoami:7001", "500")
		contains(t, r.stdout, "500 echoed")
	})

	t.Run("a wrong token is refused", func(t *testing.T) {
		bad := writeConfig(t, "not-the-token")
		r := w.run(t, []string{"--agent-token-file", bad, "--agent-fingerprint", w.fingerprint}, "true")
		if r.code != 125 {
			t.Errorf("exit %d, want 125 (trafficpolice's own failure)", r.code)
		}
		contains(t, r.stderr, "agent refused the token")
	})

	t.Run("an agent with another key gets no token", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.key")
		out, err := exec.Command(w.tp, "agent", "fingerprint", "--tls-key", other).Output()
		if err != nil {
			t.Fatal(err)
		}
		otherFP := strings.TrimSpace(string(out))
		r := w.run(t, []string{"--agent-fingerprint", otherFP}, "true")
		if r.code != 125 {
			t.Errorf("exit %d, want 125 (trafficpolice's own failure)", r.code)
		}
		contains(t, r.stderr, "does not match the pinned fingerprint")
		contains(t, r.stderr, w.fingerprint)
		contains(t, r.stderr, otherFP)
		// The client hung up in the TLS handshake, before any Hello.
		w.agent.WaitOutput(t, "tls: bad certificate", 10*time.Second)
	})

	t.Run("a run without a pin does not connect", func(t *testing.T) {
		r := w.run(t, []string{"--agent-token-file", writeConfig(t, w.token)}, "true")
		if r.code != 125 {
			t.Errorf("exit %d, want 125 (trafficpolice's own failure)", r.code)
		}
		contains(t, r.stderr, "no fingerprint pinned")
		contains(t, r.stderr, "trafficpolice agent fingerprint --tls-key FILE")
	})

	t.Run("the agent restarts mid-run and new flows succeed again", func(t *testing.T) {
		// The app dials until a first success and says so with a file;
		// the test then kills the agent, restarts it and says so with
		// another file; the app then dials until it succeeds again. Files,
		// not sleeps: a loaded machine only makes each step slower.
		dir := t.TempDir()
		first, restarted := filepath.Join(dir, "first-ok"), filepath.Join(dir, "restarted")
		script := fmt.Sprintf(`dial() { %s read whoami:7000 >/dev/null 2>&1; }
			i=0; until dial; do i=$((i+1)); [ $i -gt 300 ] && { echo never; exit 1; }; sleep 0.1; done; echo ok; touch %s
			i=0; until [ -e %s ]; do i=$((i+1)); [ $i -gt 600 ] && { echo no-restart; exit 1; }; sleep 0.1; done
			i=0; until dial; do i=$((i+1)); [ $i -gt 600 ] && { echo fail; exit 1; }; sleep 0.1; done; echo ok`, w.probe, first, restarted)
		done := make(chan result, 1)
		go func() { done <- w.sh(t, nil, script) }()
		waitFile(t, first, 60*time.Second)
		w.agent.Signal(syscall.SIGKILL)
		<-w.agent.Done()
		w.startAgent(t)
		if err := os.WriteFile(restarted, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if lines := strings.Fields(r.stdout); strings.Join(lines, " ") != "ok ok" {
			t.Fatalf("want a first dial to succeed, then one after the restart: %v\n%s", lines, r.stderr)
		}
		contains(t, r.stderr, "reconnect")
	})
}

// waitFile waits, bounded, until path exists.
func waitFile(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear within %s", path, timeout)
}

// readFlows reads a run's flow log.
func readFlows(t *testing.T, path string) []router.FlowRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the flow log: %v", err)
	}
	var out []router.FlowRecord
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec router.FlowRecord
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("flow log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}
