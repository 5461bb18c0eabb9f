package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// Forward listens on 127.0.0.1 (a random port) in the host namespace and
// relays every connection to port on the pod's own loopback through a
// socket opened inside the pod, as "kubectl port-forward" does. It is the
// only way the host reaches a pod. It returns the listener's host:port and
// stops (closing every relayed connection) in t's Cleanup.
func (p *Pod) Forward(t TB, port int) string {
	t.Helper()
	if port < 1 || port > 65535 {
		t.Fatalf("pod %s: Forward port %d is not valid: want 1-65535", p.name, port)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pod %s: Forward port %d: listen on host loopback: %v", p.name, port, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	target := "127.0.0.1:" + strconv.Itoa(port)

	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Logf("forward %s → pod %s:%d: accept: %v", ln.Addr(), p.name, port, err)
				}
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.relay(ctx, t, conn, target)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	t.Logf("forward %s → pod %s port %d", ln.Addr(), p.name, port)
	return ln.Addr().String()
}

// relay joins a host connection to a new connection inside the pod until
// both directions end or ctx is cancelled.
func (p *Pod) relay(ctx context.Context, t TB, client net.Conn, target string) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	server, err := p.DialContext(dctx, "tcp", target)
	cancel()
	if err != nil {
		// As kubectl does: the client sees its connection closed.
		t.Logf("forward to pod %s: %v", p.name, err)
		client.Close()
		return
	}
	stop := context.AfterFunc(ctx, func() {
		client.Close()
		server.Close()
	})
	defer stop()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(server, client) }()
	go func() { defer wg.Done(); pipe(client, server) }()
	wg.Wait()
	client.Close()
	server.Close()
}

// pipe copies src to dst, then half-closes dst so the peer sees EOF while
// the other direction goes on.
func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		return
	}
	dst.Close()
}
