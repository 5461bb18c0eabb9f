package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/trafficpolice/trafficpolice/test/apps/internal/serve"
)

func main() {
	fs := flag.NewFlagSet("messages-db", flag.ExitOnError)
	listen := fs.String("listen", ":8888", "`address` to serve HTTP on")
	data := fs.String("data", "", "`file` to keep messages in, one JSON line each (empty: memory only)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `messages-db stores text messages by numeric id.

  POST /store/{id}   body: the message; answers "Added new message TEXT with id ID"
  GET  /messages     the stored messages as a JSON list

Usage: messages-db [--listen ADDR] [--data FILE]

`)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "messages-db: unexpected argument %q: it takes only flags\n", fs.Arg(0))
		os.Exit(2)
	}

	log := serve.NewLogger(os.Stderr, "messages_db")
	st, err := openStore(*data)
	if err != nil {
		log.Errorf("%v", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = serve.Run(ctx, log, *listen, newHandler(log, st))
	if cerr := st.close(); err == nil && cerr != nil {
		err = fmt.Errorf("close --data %q: %w", *data, cerr)
	}
	if err != nil {
		log.Errorf("%v", err)
		os.Exit(1)
	}
}

func newHandler(log *serve.Logger, st *store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /store/{id}", func(w http.ResponseWriter, r *http.Request) {
		raw := r.PathValue("id")
		id, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			http.Error(w, fmt.Sprintf("id %q is not valid: want a non-negative integer", raw), http.StatusBadRequest)
			return
		}
		text, ok := serve.ReadText(w, r)
		if !ok {
			return
		}
		log.Debugf("store; new_message=%q", text)
		if _, err := st.add(id, text); err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, errExists) {
				status = http.StatusConflict
			}
			log.Errorf("store: %v", err)
			http.Error(w, err.Error(), status)
			return
		}
		answer := fmt.Sprintf("Added new message %s with id %d", text, id)
		log.Debugf("return=%q", answer)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, answer)
	})
	mux.HandleFunc("GET /messages", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(st.list()); err != nil {
			log.Errorf("list messages: %v", err)
		}
	})
	return mux
}
