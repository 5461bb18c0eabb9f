package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/trafficpolice/trafficpolice/test/apps/internal/serve"
	"github.com/trafficpolice/trafficpolice/test/apps/uwu"
)

// fakeDB is a minimal messages-db for the app's own tests.
type fakeDB struct {
	mu    sync.Mutex
	texts map[uint64]string
}

func (f *fakeDB) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /messages", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		list := []map[string]any{}
		for id, text := range f.texts {
			list = append(list, map[string]any{"id": id, "text": text})
		}
		json.NewEncoder(w).Encode(list)
	})
	mux.HandleFunc("POST /store/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(r.Body)
		f.texts[id] = string(b)
		io.WriteString(w, "ok")
	})
	return mux
}

func postUwu(t *testing.T, url, text string) (int, string) {
	t.Helper()
	resp, err := http.Post(url+"/uwu", "text/plain", strings.NewReader(text))
	if err != nil {
		t.Fatalf("POST /uwu: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPostUwuGoesThroughBothHops(t *testing.T) {
	uwuSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, uwu.Transform(string(b)))
	}))
	t.Cleanup(uwuSrv.Close)
	db := &fakeDB{texts: map[uint64]string{4: "older"}}
	dbSrv := httptest.NewServer(db.handler())
	t.Cleanup(dbSrv.Close)

	// host:port for one hop and a URL for the other: both forms work.
	a, err := newApp(serve.NewLogger(io.Discard, "uwu_app"), strings.TrimPrefix(uwuSrv.URL, "http://"), dbSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	app := httptest.NewServer(a.handler())
	t.Cleanup(app.Close)

	in := "Hey, are you enjoying mirrord?"
	code, body := postUwu(t, app.URL, in)
	want := "Added new message\n" + uwu.Transform(in) + "\nwith id 5\n"
	if code != http.StatusOK || body != want {
		t.Fatalf("POST /uwu = %d %q, want 200 %q", code, body, want)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.texts[5] != uwu.Transform(in) {
		t.Fatalf("db holds %q under id 5, want the uwu'd text", db.texts[5])
	}
}

func TestAFailedHopIs502NamingIt(t *testing.T) {
	// A port that was free a moment ago: connections are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	uwuSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "uwu")
	}))
	t.Cleanup(uwuSrv.Close)

	cases := []struct{ name, uwuAddr, dbAddr, hop string }{
		{"uwu-service down", dead, uwuSrv.URL, "uwu-service"},
		{"messages-db down", uwuSrv.URL, dead, "messages-db"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := newApp(serve.NewLogger(io.Discard, "uwu_app"), c.uwuAddr, c.dbAddr)
			if err != nil {
				t.Fatal(err)
			}
			app := httptest.NewServer(a.handler())
			t.Cleanup(app.Close)
			code, body := postUwu(t, app.URL, "hello")
			if code != http.StatusBadGateway || !strings.HasPrefix(body, c.hop+" at ") {
				t.Fatalf("POST /uwu = %d %q, want 502 naming %s", code, body, c.hop)
			}
		})
	}
}

func TestBadServiceAddressesAreRejected(t *testing.T) {
	for _, addr := range []string{"no-port", "ftp://x:21", "http://:80x"} {
		if _, err := newApp(serve.NewLogger(io.Discard, "uwu_app"), addr, "messages-db:8888"); err == nil ||
			!strings.Contains(err.Error(), "--uwu-service") {
			t.Errorf("newApp(uwu-service %q) = %v, want an error naming --uwu-service", addr, err)
		}
	}
}
