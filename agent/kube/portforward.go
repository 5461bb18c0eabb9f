package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// PortForward opens connections to one port of one pod through the API
// server, as `kubectl port-forward` does: over a websocket where the
// server offers it, SPDY otherwise. Each Dial is a connection of its own,
// so a dropped one is replaced by dialing again.
type PortForward struct {
	access    *Access
	namespace string
	pod       string
	port      int
	requestID atomic.Int64
}

// PortForward returns a dialer to port of the pod.
func (a *Access) PortForward(namespace, pod string, port int) *PortForward {
	return &PortForward{access: a, namespace: namespace, pod: pod, port: port}
}

// Dial opens a new port-forward and one stream on it. It satisfies
// agent/client's Options.Dialer.
func (pf *PortForward) Dial(ctx context.Context) (net.Conn, error) {
	req := pf.access.Client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(pf.namespace).Name(pf.pod).SubResource("portforward")
	u := req.URL()
	transport, upgrader, err := spdy.RoundTripperFor(pf.access.REST)
	if err != nil {
		return nil, fmt.Errorf("port-forward transport: %w", err)
	}
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	ws, err := portforward.NewSPDYOverWebsocketDialer(u, pf.access.REST)
	if err != nil {
		return nil, fmt.Errorf("port-forward websocket transport: %w", err)
	}
	dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})

	type result struct {
		conn httpstream.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, pf.describe(r.err)
	}
	c, err := pf.open(r.conn)
	if err != nil {
		r.conn.Close()
		return nil, err
	}
	return c, nil
}

func (pf *PortForward) describe(err error) error {
	// The upgrade's refusal comes back as text, not as a typed status.
	if strings.Contains(err.Error(), "is forbidden") {
		return &RBACError{Verb: "create", Resource: "pods/portforward", Namespace: pf.namespace, Message: err.Error()}
	}
	return fmt.Errorf("port-forward to pod %s/%s port %d: %w", pf.namespace, pf.pod, pf.port, err)
}

// open creates the error and data streams of one forwarded connection.
func (pf *PortForward) open(conn httpstream.Connection) (net.Conn, error) {
	id := strconv.FormatInt(pf.requestID.Add(1), 10)
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(pf.port))
	h.Set(corev1.PortForwardRequestIDHeader, id)
	errStream, err := conn.CreateStream(h)
	if err != nil {
		return nil, fmt.Errorf("port-forward error stream: %w", err)
	}
	errStream.Close() // nothing is written on it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		return nil, fmt.Errorf("port-forward data stream: %w", err)
	}
	c := &forwardConn{conn: conn, data: data, pf: pf}
	go func() {
		// The kubelet writes here when it cannot reach the port; the
		// connection is useless then.
		msg, _ := io.ReadAll(errStream)
		if len(msg) > 0 {
			c.fail(fmt.Errorf("port-forward to pod %s/%s port %d: %s", pf.namespace, pf.pod, pf.port, msg))
		}
	}()
	go func() {
		<-conn.CloseChan()
		c.fail(fmt.Errorf("port-forward to pod %s/%s: connection to the API server closed", pf.namespace, pf.pod))
	}()
	return c, nil
}

// forwardConn is one port-forwarded connection as a net.Conn. Deadlines
// are not supported (the streams have none); agent/client bounds its
// waits with contexts and closes the connection instead.
type forwardConn struct {
	conn httpstream.Connection
	data httpstream.Stream
	pf   *PortForward

	mu     sync.Mutex
	err    error
	closed bool
}

func (c *forwardConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil && !c.closed {
		c.err = err
	}
	c.mu.Unlock()
	c.conn.Close()
}

func (c *forwardConn) failure(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil && (err == nil || errors.Is(err, io.EOF) || !errors.Is(err, net.ErrClosed)) {
		return c.err
	}
	return err
}

func (c *forwardConn) Read(p []byte) (int, error) {
	n, err := c.data.Read(p)
	if err != nil && n == 0 {
		if f := c.failure(nil); f != nil && err == io.EOF {
			return 0, f
		}
	}
	return n, err
}

func (c *forwardConn) Write(p []byte) (int, error) {
	n, err := c.data.Write(p)
	if err != nil {
		err = c.failure(err)
	}
	return n, err
}

func (c *forwardConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.data.Reset()
	return c.conn.Close()
}

func (c *forwardConn) LocalAddr() net.Addr { return forwardAddr("trafficpolice") }
func (c *forwardConn) RemoteAddr() net.Addr {
	return forwardAddr(fmt.Sprintf("pod/%s/%s:%d", c.pf.namespace, c.pf.pod, c.pf.port))
}

func (c *forwardConn) SetDeadline(time.Time) error      { return nil }
func (c *forwardConn) SetReadDeadline(time.Time) error  { return nil }
func (c *forwardConn) SetWriteDeadline(time.Time) error { return nil }

type forwardAddr string

func (a forwardAddr) Network() string { return "portforward" }
func (a forwardAddr) String() string  { return string(a) }
