package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/test/apps/internal/serve"
	"github.com/trafficpolice/trafficpolice/test/apps/uwu"
)

func TestPostUwuAnswersTheTransform(t *testing.T) {
	var logs bytes.Buffer
	srv := httptest.NewServer(newHandler(serve.NewLogger(&logs, "uwu_service")))
	t.Cleanup(srv.Close)

	in := "Hey, are you enjoying mirrord?"
	resp, err := http.Post(srv.URL+"/uwu", "text/plain", strings.NewReader(in))
	if err != nil {
		t.Fatalf("POST /uwu: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != uwu.Transform(in) {
		t.Fatalf("POST /uwu = %d %q, want 200 %q", resp.StatusCode, body, uwu.Transform(in))
	}
	if !strings.Contains(logs.String(), `[DEBUG uwu_service] uwu; input="Hey, are you enjoying mirrord?"`) {
		t.Fatalf("log lacks the request: %q", logs.String())
	}
}

func TestPostUwuRejectsBadBodies(t *testing.T) {
	srv := httptest.NewServer(newHandler(serve.NewLogger(io.Discard, "uwu_service")))
	t.Cleanup(srv.Close)

	cases := []struct {
		name string
		body []byte
		want int
	}{
		{"not UTF-8", []byte{0xff, 0xfe}, http.StatusBadRequest},
		{"too large", bytes.Repeat([]byte("a"), serve.MaxBody+1), http.StatusRequestEntityTooLarge},
	}
	for _, c := range cases {
		resp, err := http.Post(srv.URL+"/uwu", "text/plain", bytes.NewReader(c.body))
		if err != nil {
			t.Fatalf("%s: POST /uwu: %v", c.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: POST /uwu = %d, want %d", c.name, resp.StatusCode, c.want)
		}
	}

	resp, err := http.Get(srv.URL + "/uwu")
	if err != nil {
		t.Fatalf("GET /uwu: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /uwu = %d, want 405", resp.StatusCode)
	}
}
