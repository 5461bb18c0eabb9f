package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trafficpolice/trafficpolice/test/apps/internal/serve"
)

const (
	defaultUwuService = "uwu-service:8080"
	defaultMessagesDB = "messages-db:8888"
	hopTimeout        = 30 * time.Second
)

func main() {
	fs := flag.NewFlagSet("uwu-app", flag.ExitOnError)
	listen := fs.String("listen", ":9999", "`address` to serve HTTP on")
	uwuService := fs.String("uwu-service", envOr("UWU_SERVICE", defaultUwuService),
		"uwu-service `address` (host:port or URL); default from $UWU_SERVICE")
	messagesDB := fs.String("messages-db", envOr("MESSAGES_DB", defaultMessagesDB),
		"messages-db `address` (host:port or URL); default from $MESSAGES_DB")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `uwu-app uwu's a message through uwu-service and stores it in messages-db.

  POST /uwu   body: plain UTF-8 text; answers "Added new message\n<uwu text>\nwith id N"

Usage: uwu-app [--listen ADDR] [--uwu-service ADDR] [--messages-db ADDR]

Environment: UWU_SERVICE (default %s), MESSAGES_DB (default %s)

`, defaultUwuService, defaultMessagesDB)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "uwu-app: unexpected argument %q: it takes only flags\n", fs.Arg(0))
		os.Exit(2)
	}

	log := serve.NewLogger(os.Stderr, "uwu_app")
	app, err := newApp(log, *uwuService, *messagesDB)
	if err != nil {
		log.Errorf("%v", err)
		os.Exit(2)
	}
	log.Infof("uwu-service at %s, messages-db at %s", app.uwuURL, app.dbURL)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve.Run(ctx, log, *listen, app.handler()); err != nil {
		log.Errorf("%v", err)
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// app holds where the two hops go and the client that makes them.
type app struct {
	log    *serve.Logger
	uwuURL string // base URL of uwu-service, no trailing slash
	dbURL  string // base URL of messages-db, no trailing slash
	client *http.Client
	// storeMu makes "find the next id, store under it" one step.
	storeMu sync.Mutex
}

func newApp(log *serve.Logger, uwuService, messagesDB string) (*app, error) {
	uwuURL, err := baseURL("uwu-service", uwuService)
	if err != nil {
		return nil, err
	}
	dbURL, err := baseURL("messages-db", messagesDB)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Cluster services are never reached through a proxy from the environment.
	tr.Proxy = nil
	return &app{
		log:    log,
		uwuURL: uwuURL,
		dbURL:  dbURL,
		client: &http.Client{Transport: tr, Timeout: hopTimeout},
	}, nil
}

// baseURL accepts host:port or an http(s) URL for the service named field.
func baseURL(field, addr string) (string, error) {
	raw := addr
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" {
		return "", fmt.Errorf("--%s %q is not valid: want host:port (e.g. %s-host:80) or http://host:port", field, addr, field)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /uwu", a.postUwu)
	return mux
}

func (a *app) postUwu(w http.ResponseWriter, r *http.Request) {
	text, ok := serve.ReadText(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	uwued, err := a.call(ctx, http.MethodPost, a.uwuURL+"/uwu", text)
	if err != nil {
		a.hopFailed(w, "uwu-service", a.uwuURL, err)
		return
	}
	a.log.Debugf("uwu-service answered %q", uwued)

	a.storeMu.Lock()
	id, err := a.nextID(ctx)
	if err != nil {
		a.storeMu.Unlock()
		a.hopFailed(w, "messages-db", a.dbURL, err)
		return
	}
	stored, err := a.call(ctx, http.MethodPost, fmt.Sprintf("%s/store/%d", a.dbURL, id), uwued)
	a.storeMu.Unlock()
	if err != nil {
		a.hopFailed(w, "messages-db", a.dbURL, err)
		return
	}
	a.log.Debugf("messages-db answered %q", stored)

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Added new message\n%s\nwith id %d\n", uwued, id)
}

// nextID is one more than the largest id messages-db holds, or 0.
func (a *app) nextID(ctx context.Context) (uint64, error) {
	body, err := a.call(ctx, http.MethodGet, a.dbURL+"/messages", "")
	if err != nil {
		return 0, err
	}
	var msgs []struct {
		ID uint64 `json:"id"`
	}
	if err := json.Unmarshal([]byte(body), &msgs); err != nil {
		return 0, fmt.Errorf("GET /messages: answer is not a JSON list of messages: %w", err)
	}
	var next uint64
	for _, m := range msgs {
		if m.ID >= next {
			next = m.ID + 1
		}
	}
	return next, nil
}

// call makes one request and returns the body of a 200 answer.
func (a *app) call(ctx context.Context, method, url, body string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("build %s %s: %w", method, url, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4*serve.MaxBody))
	if err != nil {
		return "", fmt.Errorf("read answer of %s %s: %w", method, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

func (a *app) hopFailed(w http.ResponseWriter, hop, base string, err error) {
	msg := fmt.Sprintf("%s at %s failed: %v", hop, base, err)
	a.log.Errorf("%s", msg)
	http.Error(w, msg, http.StatusBadGateway)
}
