package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// IPv6 end to end (feature.network.ipv6): remote TCP, UDP and DNS to the
// cluster's IPv6 addresses, a local IPv6 flow by a [v6] filter entry, and
// steal of the pod's port over IPv6.
func TestIPv6EndToEnd(t *testing.T) {
	w := newIncomingWorld(t)
	ip6 := w.target.IPv6()
	v6 := writeConfig(t, `{"feature":{"network":{"ipv6":true}}}`)

	t.Run("remote tcp and udp to an IPv6 service, from the pod's IPv6 address", func(t *testing.T) {
		r := w.sh(t, []string{"-f", v6}, fmt.Sprintf("%[1]s read [%[2]s]:7000; %[1]s read whoami6.default.svc.cluster.local:7000; %[1]s udp [%[2]s]:7000",
			w.probe, w.whoami.IPv6()))
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		peer := "whoami peer=[" + ip6.String() + "]:"
		if n := strings.Count(r.stdout, peer); n != 3 {
			t.Errorf("want 3 answers (2 TCP, 1 UDP) naming the pod's IPv6 address %s, got %d", ip6, n)
		}
		contains(t, r.stdout, "udp: "+peer)
	})

	t.Run("AAAA through the pod's resolver", func(t *testing.T) {
		r := w.sh(t, []string{"-f", v6}, "dig +short AAAA whoami6.default.svc.cluster.local")
		contains(t, r.stdout, w.whoami.IPv6().String())
	})

	t.Run("a [v6] local entry sends the flow to the host", func(t *testing.T) {
		port := hostWhoami(t, "tcp6", "[::1]:0", "host6")
		cfg := writeConfig(t, fmt.Sprintf(`{"feature":{"network":{"ipv6":true,"outgoing":{"filter":{"local":["[::1]:%d"]}}}}}`, port))
		r := w.sh(t, []string{"-f", cfg}, fmt.Sprintf("%[1]s read [::1]:%[2]d; %[1]s read whoami:7000", w.probe, port))
		contains(t, r.stdout, "host6 peer=[::1]:")
		contains(t, r.stdout, "whoami peer="+w.target.IP().String()+":")
	})

	t.Run("steal over IPv6: a client reaching the pod's IPv6 address gets the local app", func(t *testing.T) {
		stealing := fmt.Sprintf("stealing pod port %d → app :%d", stolenPort, stolenPort)
		cfg := writeConfig(t, `{"feature":{"network":{"ipv6":true,"incoming":"steal"}}}`)
		r := w.start(t, "steal6", nil, []string{"-f", cfg}, w.tags, fmt.Sprintf("[::1]:%d", stolenPort), "local6")
		r.waitStderr(t, "✓ "+stealing, 30*time.Second)
		url6 := netip.AddrPortFrom(ip6, stolenPort).String()
		wantAnswer(t, w.get(t, "GET", url6, "/v6"), "local6 GET /v6")
		wantAnswer(t, w.get(t, "GET", w.podURL, "/v4"), "local6 GET /v4")
		r.stop(t)
		contains(t, r.stdout.String(), "local6 got GET /v6")
		wantAnswer(t, w.get(t, "GET", url6, "/after"), "pod GET /after")
	})

	t.Run("mirror over IPv6: the pod answers, the local app gets a copy", func(t *testing.T) {
		cfg := writeConfig(t, `{"feature":{"network":{"ipv6":true,"incoming":"mirror"}}}`)
		r := w.start(t, "mirror6", nil, []string{"-f", cfg}, w.tags, fmt.Sprintf("[::1]:%d", stolenPort), "copy6")
		r.waitStderr(t, fmt.Sprintf("✓ mirroring pod port %d", stolenPort), 30*time.Second)
		url6 := netip.AddrPortFrom(ip6, stolenPort).String()
		wantAnswer(t, w.get(t, "GET", url6, "/m6"), "pod GET /m6")
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(r.stdout.String(), "copy6 got GET /m6") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		r.stop(t)
		contains(t, r.stdout.String(), "copy6 got GET /m6")
	})
}
