package serve

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer lets the test read what the server's goroutines log.
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

func TestServeLogsEachRequestsPeerAndStopsWithItsContext(t *testing.T) {
	var logs syncBuffer
	log := NewLogger(&logs, "test_app")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, log, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "short and stout")
		}))
	}()

	resp, err := http.Get("http://" + ln.Addr().String() + "/pot?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after its context ended, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop after its context ended")
	}
	out := logs.String()
	for _, want := range []string{
		"[INFO  test_app] listening on " + ln.Addr().String(),
		"[INFO  http] 127.0.0.1:",
		`"GET /pot?x=1 HTTP/1.1" 418 15 `,
		"[INFO  test_app] stopping",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestRunNamesTheListenFlagOnError(t *testing.T) {
	err := Run(context.Background(), NewLogger(io.Discard, "x"), "not-an-address", http.NotFoundHandler())
	if err == nil || !strings.Contains(err.Error(), `--listen "not-an-address"`) {
		t.Fatalf("Run(bad address) = %v, want an error naming --listen", err)
	}
}
