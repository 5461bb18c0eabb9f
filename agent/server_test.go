package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

func TestNewValidatesOptions(t *testing.T) {
	if _, err := New(Options{Token: "t", NATBackend: "ipfw"}); err == nil || !strings.Contains(err.Error(), "NATBackend") {
		t.Errorf("New with a bad backend: %v, want an error naming NATBackend", err)
	}
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "Token is empty") {
		t.Errorf("no token: %v", err)
	}
	if _, err := New(Options{Token: "x", DialTimeout: -time.Second}); err == nil || !strings.Contains(err.Error(), "DialTimeout -1s is negative") {
		t.Errorf("negative DialTimeout: %v", err)
	}
	if err := Serve(context.Background(), Options{Token: "x"}); err == nil || !strings.Contains(err.Error(), "ListenAddress is empty") {
		t.Errorf("no listen address: %v", err)
	}
	s, err := New(Options{Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if s.opts.CommunicationTimeout != DefaultCommunicationTimeout || s.opts.ResolvConfPath != DefaultResolvConfPath {
		t.Errorf("defaults not filled in: %+v", s.opts)
	}
}

// syncBuffer is a log sink safe for the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer runs an agent on a loopback port until the test ends.
func startServer(t *testing.T, opts Options) (addr string, logs *syncBuffer) {
	t.Helper()
	logs = &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, s), logs
}

// hello runs the handshake by hand and returns the agent's answer and the
// client's local address.
func hello(t *testing.T, addr string, h proto.Hello) (proto.Message, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := proto.WriteMessage(c, h); err != nil {
		t.Fatal(err)
	}
	m, err := proto.ReadMessage(c)
	if err != nil {
		t.Fatalf("read the answer to Hello: %v", err)
	}
	return m, c.LocalAddr().String()
}

func TestHandshakeRefusesWrongOrMissingTokenAndLogsIt(t *testing.T) {
	for name, token := range map[string]string{"wrong": "not-it", "missing": ""} {
		t.Run(name, func(t *testing.T) {
			addr, logs := startServer(t, Options{Token: "s3cret", ResolvConfPath: writeTemp(t, "resolv.conf", "")})
			m, local := hello(t, addr, proto.Hello{Version: proto.Version, Token: token})
			r, ok := m.(proto.Refused)
			if !ok || r.Code != proto.RefuseToken {
				t.Fatalf("answer = %#v, want Refused{Code: RefuseToken}", m)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(logs.String(), local) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if l := logs.String(); !strings.Contains(l, "wrong or missing token") || !strings.Contains(l, local) {
				t.Errorf("the agent's log does not name the refusal and the client %s:\n%s", local, l)
			}
			if strings.Contains(logs.String(), "s3cret") {
				t.Error("the agent logged its token")
			}
		})
	}
}

func TestHandshakeRefusesOtherVersions(t *testing.T) {
	addr, _ := startServer(t, Options{Token: "s3cret"})
	m, _ := hello(t, addr, proto.Hello{Version: proto.Version + 1, Token: "s3cret"})
	if r, ok := m.(proto.Refused); !ok || r.Code != proto.RefuseVersion || !strings.Contains(r.Reason, fmt.Sprintf("version %d", proto.Version)) {
		t.Fatalf("answer = %#v, want Refused{Code: RefuseVersion} naming version %d", m, proto.Version)
	}
}

func TestHandshakeWelcomesWithPodFacts(t *testing.T) {
	rc := writeTemp(t, "resolv.conf", "search ns1.svc.cluster.local svc.cluster.local\nnameserver 127.0.0.53\noptions ndots:5 timeout:1\n")
	addr, _ := startServer(t, Options{Token: "s3cret", ResolvConfPath: rc})
	m, _ := hello(t, addr, proto.Hello{Version: proto.Version, Token: "s3cret"})
	w, ok := m.(proto.Welcome)
	if !ok {
		t.Fatalf("answer = %#v, want Welcome", m)
	}
	host, _ := os.Hostname()
	f := w.Facts
	if f.Hostname != host || f.Ndots != 5 || strings.Join(f.SearchDomains, " ") != "ns1.svc.cluster.local svc.cluster.local" ||
		strings.Join(f.Options, " ") != "timeout:1" {
		t.Errorf("facts = %+v", f)
	}
	for _, a := range f.Addresses {
		if a.IsLoopback() || a.IsLinkLocalUnicast() {
			t.Errorf("facts list %s, which means nothing outside the pod", a)
		}
	}
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
