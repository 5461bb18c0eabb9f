// Command tagserver is the incoming-traffic tests' app, run both in the
// target pod (tag "pod") and in sandboxes (tags of the developers). It
// answers HTTP/1.x requests with "TAG METHOD PATH" and prints
// "TAG got METHOD PATH" for each; a connection that does not start with an
// HTTP request line is echoed line by line as "TAG raw: LINE".
//
//	tagserver ADDR TAG [-q]
//
// With -q it prints nothing per request (load tests).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
)

func main() {
	if len(os.Args) < 3 || len(os.Args) > 4 || len(os.Args) == 4 && os.Args[3] != "-q" {
		fmt.Fprintln(os.Stderr, "usage: tagserver ADDR TAG [-q]")
		os.Exit(2)
	}
	tag, quiet := os.Args[2], len(os.Args) == 4
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "tagserver:", err)
		os.Exit(1)
	}
	httpConns := &chanListener{addr: ln.Addr(), conns: make(chan net.Conn)}
	var mu sync.Mutex // one line at a time on stdout
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if !quiet {
			mu.Lock()
			fmt.Printf("%s got %s %s body=%d\n", tag, r.Method, r.URL.Path, n)
			mu.Unlock()
		}
		w.Header().Set("X-Tag", tag)
		fmt.Fprintf(w, "%s %s %s\n", tag, r.Method, r.URL.Path)
	})}
	go srv.Serve(httpConns)
	fmt.Printf("%s listening on %s\n", tag, ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "tagserver:", err)
			os.Exit(1)
		}
		go func() {
			br := bufio.NewReader(c)
			line, err := br.ReadSlice('\n')
			if err != nil {
				c.Close()
				return
			}
			line = append([]byte(nil), line...)
			if bytes.Contains(line, []byte(" HTTP/1.")) {
				httpConns.conns <- &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(line), br)}
				return
			}
			defer c.Close()
			for {
				fmt.Fprintf(c, "%s raw: %s", tag, line)
				if line, err = br.ReadBytes('\n'); err != nil {
					return
				}
			}
		}()
	}
}

// chanListener hands the HTTP server the connections main sorted out.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
}

func (l *chanListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, errors.New("closed")
	}
	return c, nil
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// replayConn reads first the bytes main already read.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }
