package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/trafficpolice/trafficpolice/test/apps/internal/serve"
	"github.com/trafficpolice/trafficpolice/test/apps/uwu"
)

func main() {
	fs := flag.NewFlagSet("uwu-service", flag.ExitOnError)
	listen := fs.String("listen", ":8080", "`address` to serve HTTP on")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `uwu-service turns text into its uwu'd form.

  POST /uwu   body: plain UTF-8 text; answers the uwu'd text

Usage: uwu-service [--listen ADDR]

`)
		fs.PrintDefaults()
	}
	// ExitOnError: a bad flag exits 2 with the usage.
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "uwu-service: unexpected argument %q: it takes only flags\n", fs.Arg(0))
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := serve.NewLogger(os.Stderr, "uwu_service")
	if err := serve.Run(ctx, log, *listen, newHandler(log)); err != nil {
		log.Errorf("%v", err)
		os.Exit(1)
	}
}

func newHandler(log *serve.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /uwu", func(w http.ResponseWriter, r *http.Request) {
		text, ok := serve.ReadText(w, r)
		if !ok {
			return
		}
		out := uwu.Transform(text)
		log.Debugf("uwu; input=%q output=%q", text, out)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, out)
	})
	return mux
}
