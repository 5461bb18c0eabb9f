// Command testapp is the Kubernetes harness's sample workload, one static
// binary for every image the harness imports:
//
//	testapp pause                              the pod sandbox's pause process
//	testapp serve --listen ADDR --name NAME    HTTP: GET / answers who served and who asked
//	testapp post --url URL --data TEXT         a client: POST TEXT to URL, print the answer
//
// The answer of serve is one JSON object: {"name", "peer", "hostname",
// "env"} where peer is the client's address as this server saw it and env
// the value of $TESTAPP_ECHO_ENV's variable. It keeps no state and calls
// nothing. post prints the answer's status line and body, and fails (exit
// 1) unless the status is 200.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testapp pause | testapp serve --listen ADDR --name NAME | testapp post --url URL --data TEXT")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		pause()
	case "serve":
		serve(os.Args[2:])
	case "post":
		post(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "testapp: unknown command %q: use pause, serve or post\n", os.Args[1])
		os.Exit(2)
	}
}

// pause sleeps until SIGTERM or SIGINT, reaping children, as a pod
// sandbox's first process must.
func pause() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", ":8080", "`address` to serve HTTP on")
	name := fs.String("name", "testapp", "`name` to answer with")
	fs.Parse(args)
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"name":     *name,
			"peer":     r.RemoteAddr,
			"hostname": host,
			"env":      os.Getenv(os.Getenv("TESTAPP_ECHO_ENV")),
		})
	})
	srv := &http.Server{Addr: *listen}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

func post(args []string) {
	fs := flag.NewFlagSet("post", flag.ExitOnError)
	url := fs.String("url", "", "`URL` to POST to")
	data := fs.String("data", "", "the request's body (plain text)")
	fs.Parse(args)
	if *url == "" {
		fmt.Fprintln(os.Stderr, "testapp post: --url is empty: give the URL to POST to")
		os.Exit(2)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	res, err := c.Post(*url, "text/plain; charset=utf-8", strings.NewReader(*data))
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp post:", err)
		os.Exit(1)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	fmt.Printf("%s\n%s", res.Status, body)
	if err != nil || res.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "testapp post: answer", res.Status, err)
		os.Exit(1)
	}
}
