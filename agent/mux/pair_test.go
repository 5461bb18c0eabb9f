package mux_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/mux"
)

// session is what the tests need of either implementation.
type session interface {
	Open() (net.Conn, error)
	Accept() (net.Conn, error)
	Close() error
}

// impl builds one end of a session.
type impl struct {
	name   string
	client func(net.Conn, int) session
	server func(net.Conn, int) session
}

var (
	ours = impl{
		name: "mux",
		client: func(c net.Conn, backlog int) session {
			s, err := mux.Client(c, muxConfig(backlog))
			if err != nil {
				panic(err)
			}
			return s
		},
		server: func(c net.Conn, backlog int) session {
			s, err := mux.Server(c, muxConfig(backlog))
			if err != nil {
				panic(err)
			}
			return s
		},
	}
	theirs = impl{
		name: "yamux",
		client: func(c net.Conn, backlog int) session {
			s, err := yamux.Client(c, yamuxConfig(backlog))
			if err != nil {
				panic(err)
			}
			return s
		},
		server: func(c net.Conn, backlog int) session {
			s, err := yamux.Server(c, yamuxConfig(backlog))
			if err != nil {
				panic(err)
			}
			return s
		},
	}
)

// window is the stream window both implementations advertise in tests,
// as agent/proto's MuxConfig does.
const window = 8 << 20

func muxConfig(backlog int) mux.Config {
	return mux.Config{AcceptBacklog: backlog, StreamWindow: window, KeepAliveInterval: 5 * time.Second}
}

func yamuxConfig(backlog int) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = backlog
	c.MaxStreamWindowSize = window
	c.StreamCloseTimeout = 0
	c.LogOutput = io.Discard
	return c
}

// pairings are the client/server combinations every interop test runs.
var pairings = []struct{ client, server impl }{
	{ours, ours},
	{ours, theirs},
	{theirs, ours},
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return a, r.c
}

// sessions runs f for each pairing with a connected client and server;
// backlog is the server's accept backlog.
func sessions(t *testing.T, backlog int, f func(t *testing.T, client, server session)) {
	for _, p := range pairings {
		t.Run(p.client.name+"-client/"+p.server.name+"-server", func(t *testing.T) {
			a, b := tcpPair(t)
			client := p.client.client(a, 256)
			server := p.server.server(b, backlog)
			t.Cleanup(func() {
				client.Close()
				server.Close()
			})
			f(t, client, server)
		})
	}
}
