package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/test/apps/internal/serve"
)

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStoreAnswersLogsAndAppendsToTheDataFile(t *testing.T) {
	data := filepath.Join(t.TempDir(), "messages.jsonl")
	st, err := openStore(data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	var logs bytes.Buffer
	log := serve.NewLogger(&logs, "messages_db")
	srv := httptest.NewServer(serve.AccessLog(log, newHandler(log, st)))
	t.Cleanup(srv.Close)

	text := "hey, 🥺 awe you enjoying miwwowd?\nwhy n-nyot staw us on g-github?"
	code, body := post(t, srv.URL+"/store/0", text)
	if code != http.StatusOK || body != "Added new message "+text+" with id 0" {
		t.Fatalf("POST /store/0 = %d %q", code, body)
	}

	raw, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	var m Message
	if err := json.Unmarshal(bytes.TrimSpace(raw), &m); err != nil || m.ID != 0 || m.Text != text {
		t.Fatalf("data file = %q (%v), want one line with id 0 and the text", raw, err)
	}

	resp, err := http.Get(srv.URL + "/messages")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []Message
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list) != 1 || list[0].Text != text {
		t.Fatalf("GET /messages = %+v (%v), want the one message", list, err)
	}

	// Close waits for the handlers, so every access line is written.
	srv.Close()
	for _, want := range []string{
		`[DEBUG messages_db] store; new_message="hey, 🥺 awe you enjoying miwwowd?\nwhy n-nyot staw us on g-github?"`,
		`[DEBUG messages_db] return="Added new message hey, 🥺`,
		`"POST /store/0 HTTP/1.1" 200`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestStoreRejectsBadIDsAndDuplicates(t *testing.T) {
	st, err := openStore("")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newHandler(serve.NewLogger(io.Discard, "messages_db"), st))
	t.Cleanup(srv.Close)

	if code, body := post(t, srv.URL+"/store/abc", "x"); code != http.StatusBadRequest || !strings.Contains(body, `id "abc"`) {
		t.Errorf("POST /store/abc = %d %q, want 400 naming the id", code, body)
	}
	if code, _ := post(t, srv.URL+"/store/7", "first"); code != http.StatusOK {
		t.Fatalf("POST /store/7 = %d", code)
	}
	if code, body := post(t, srv.URL+"/store/7", "second"); code != http.StatusConflict {
		t.Errorf("second POST /store/7 = %d %q, want 409", code, body)
	}
}

func TestEmptyListIsAJSONArray(t *testing.T) {
	st, _ := openStore("")
	srv := httptest.NewServer(newHandler(serve.NewLogger(io.Discard, "messages_db"), st))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/messages")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if strings.TrimSpace(string(b)) != "[]" {
		t.Fatalf("GET /messages on an empty store = %q, want []", b)
	}
}

func TestStoreReloadsItsDataFile(t *testing.T) {
	data := filepath.Join(t.TempDir(), "messages.jsonl")
	st, err := openStore(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.add(3, "kept"); err != nil {
		t.Fatal(err)
	}
	st.close()

	again, err := openStore(data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.close() })
	if got := again.list(); len(got) != 1 || got[0].ID != 3 || got[0].Text != "kept" {
		t.Fatalf("reloaded store = %+v, want message 3 \"kept\"", got)
	}
	if _, err := again.add(3, "dup"); err == nil {
		t.Fatal("reloaded store accepted a duplicate id")
	}

	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte("{\"id\":1}\nnot json\n"), 0o644)
	if _, err := openStore(bad); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("openStore(corrupt file) = %v, want an error naming line 2", err)
	}
}
