package incoming

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/trafficpolice/trafficpolice/splice"
)

// HTTP/2 under HTTP filters: a connection that opens with the HTTP/2
// client preface (h2c with prior knowledge, as gRPC speaks it) is
// terminated by an HTTP/2 server of the agent, which decides each stream
// as the HTTP/1 filter decides each request, and forwards it through an
// HTTP/2 client connection of its own to the first stealing client whose
// filter matches, or else to the pod's app. The library does the framing,
// HPACK, flow control, trailers and GOAWAY on both sides; what is ours is
// the choice of backend. Unlike HTTP/1, the bytes do not travel unchanged:
// each request and response is decoded and encoded again (same fields,
// same order of data, trailers kept). Backends are spoken to with prior
// knowledge, so the local app must accept h2c as the pod's app does.
// Copies for filtered mirrors are in http2mirror.go.

// Limits of an HTTP/2 connection under filters: what one client (or
// backend) can make the agent hold.
const (
	// h2MaxStreams is the concurrent streams the agent allows a client
	// (net/http's default; gRPC clients queue beyond it).
	h2MaxStreams = 250
	// h2ConnBuffer and h2StreamBuffer bound the request (or response)
	// bytes buffered per connection and per stream, waiting for the other
	// side: they are the flow-control windows the agent grants.
	h2ConnBuffer   = 4 << 20
	h2StreamBuffer = 1 << 20
	// h2MaxHeaderList bounds a header list, decoded (as maxHeadSize an
	// HTTP/1 head).
	h2MaxHeaderList = maxHeadSize
)

// errH2Preface means a connection opened with the HTTP/2 client preface.
var errH2Preface = errors.New("HTTP/2 client preface")

// peekH2Preface reports whether br starts with the HTTP/2 client preface,
// reading no further than the first byte that differs from it. It leaves
// the bytes in br.
func peekH2Preface(br *bufio.Reader) (bool, error) {
	for n := 1; n <= len(http2.ClientPreface); n++ {
		b, err := br.Peek(n)
		if err != nil {
			return false, err
		}
		if b[n-1] != http2.ClientPreface[n-1] {
			return false, nil
		}
	}
	return true, nil
}

// upstreamGreetsHTTP2 reports whether what the pod's app sent before the
// client spoke, as far as it arrived, is an HTTP/2 server's SETTINGS.
func (h *httpConn) upstreamGreetsHTTP2() bool {
	b, _ := h.upstream.br.Peek(h.upstream.br.Buffered())
	if len(b) < frameHeaderLen {
		return false
	}
	fh, err := http2.ReadFrameHeader(bytes.NewReader(b[:frameHeaderLen]))
	return err == nil && fh.Type == http2.FrameSettings && fh.StreamID == 0 && fh.Length%6 == 0 && !fh.Flags.Has(http2.FlagSettingsAck)
}

// frameHeaderLen is the length of an HTTP/2 frame header (RFC 9113 §4.1).
const frameHeaderLen = 9

// h2MaxUpgradeBody bounds the body of a request that asks for h2c: it is
// read whole before the switch (it belongs to stream 1). A request with a
// larger or chunked body goes on as HTTP/1.
const h2MaxUpgradeBody = 64 << 10

// h2cUpgrade reports whether req asks to switch to HTTP/2 in clear text
// (RFC 7540 §3.2: Upgrade: h2c, with one HTTP2-Settings named in
// Connection), and returns the client's settings it carries.
func h2cUpgrade(req *requestHead) (settings []byte, ok bool) {
	if req.version != "HTTP/1.1" {
		return nil, false
	}
	var upgrade, connection, http2Settings []string
	for _, l := range req.headers {
		switch strings.ToLower(l.name) {
		case "upgrade":
			upgrade = append(upgrade, l.value)
		case "connection":
			connection = append(connection, l.value)
		case "http2-settings":
			http2Settings = append(http2Settings, l.value)
		}
	}
	if !httpguts.HeaderValuesContainsToken(upgrade, "h2c") ||
		!httpguts.HeaderValuesContainsToken(connection, "upgrade") ||
		!httpguts.HeaderValuesContainsToken(connection, "http2-settings") ||
		len(http2Settings) != 1 {
		return nil, false
	}
	settings, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimRight(http2Settings[0], "="))
	if err != nil || len(settings)%6 != 0 {
		return nil, false
	}
	return settings, true
}

// upgradeToH2 takes the client's h2c upgrade, when the pod's app speaks
// HTTP/2 in clear text: the agent answers 101 itself and serves the
// connection as HTTP/2, req as its stream 1. It reports false, with
// nothing of the request's body read, when the request goes on as HTTP/1
// (to a backend that ignores the Upgrade, or takes the whole connection
// as it would without the agent).
func (h *httpConn) upgradeToH2(req *requestHead, settings []byte) bool {
	if req.chunked || req.contentLength > h2MaxUpgradeBody {
		return false
	}
	if !h.in.speaksH2C(h.ctx, h.dst) {
		h.in.log.Debug("h2c upgrade left to the pod's app: it does not speak HTTP/2 in clear text", "peer", h.src.String())
		return false
	}
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(req.raw)))
	if err != nil {
		return false
	}
	var body io.ReadCloser = http.NoBody
	if req.contentLength > 0 {
		b := make([]byte, req.contentLength)
		_ = h.client.SetReadDeadline(time.Now().Add(h.in.httpHeadTimeout))
		_, err := io.ReadFull(h.br, b)
		_ = h.client.SetReadDeadline(time.Time{})
		if err != nil {
			h.in.log.Debug("the body of an h2c upgrade request did not arrive", "peer", h.src.String(), "err", err)
			splice.Abort(h.client)
			return true
		}
		body = io.NopCloser(bytes.NewReader(b))
	}
	r.Body = body
	for _, k := range []string{"Connection", "Upgrade", "Http2-Settings"} {
		r.Header.Del(k)
	}
	r = r.WithContext(h.ctx)
	if _, err := io.WriteString(h.client, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"); err != nil {
		splice.Abort(h.client)
		return true
	}
	if h.upstream != nil {
		// An HTTP/1 connection, of no use to HTTP/2.
		_ = h.upstream.side.Close()
		h.upstream = nil
	}
	h.in.log.Debug("h2c upgrade: deciding each stream", "peer", h.src.String())
	h.serveH2(nil, r, settings)
	return true
}

// speaksH2C reports whether the app at dst answers the HTTP/2 preface
// with its SETTINGS, on a connection of its own that is then closed.
func (in *Service) speaksH2C(ctx context.Context, dst netip.AddrPort) bool {
	c, err := in.dial(ctx, dst)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(cmp.Or(in.dialTimeout, 5*time.Second)))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return false
	}
	if err := http2.NewFramer(c, nil).WriteSettings(); err != nil {
		return false
	}
	fh, err := http2.ReadFrameHeader(c)
	return err == nil && fh.Type == http2.FrameSettings && fh.StreamID == 0
}

// h2Conn serves one HTTP/2 connection on an HTTP-filtered port.
type h2Conn struct {
	in       *Service
	ctx      context.Context
	src, dst netip.AddrPort
	log      *slog.Logger

	mu     sync.Mutex
	pod    *h2Backend
	stolen map[*subscription]*h2Backend
	copies map[*subscription]*h2Backend
	// copyQueued is what the copies of this connection's requests hold,
	// together: bounded by maxTapQueue, as a mirror of a whole
	// connection is, however many streams the caller opens.
	copyQueued atomic.Int64
	// spare is a connection to the pod's app dialed before the protocol
	// was known; the pod's first HTTP/2 connection uses it.
	spare net.Conn
	// conns are all backend connections, closed when the client's
	// connection ends.
	conns  []net.Conn
	closed bool
}

// h2Backend is one backend of a connection: a transport whose connections
// all lead to it, and the proxy that forwards requests through it.
type h2Backend struct {
	name  string
	tr    *http.Transport
	proxy *httputil.ReverseProxy
}

// serveH2 serves the client's connection as HTTP/2 until it ends; br holds
// what was read of it (the preface, at least). A connection to the pod's
// app already dialed (spare, may be nil) is used, not wasted. After an
// h2c upgrade, upgrade is the request that asked for it (stream 1) and
// settings the client's, from its HTTP2-Settings.
func (h *httpConn) serveH2(spare net.Conn, upgrade *http.Request, settings []byte) {
	c := &h2Conn{in: h.in, ctx: h.ctx, src: h.src, dst: h.dst, log: h.in.log.With("peer", h.src.String()),
		stolen: map[*subscription]*h2Backend{}, copies: map[*subscription]*h2Backend{}, spare: spare}
	defer c.close()
	c.log.Debug("HTTP/2 connection on a filtered port: deciding each stream")
	srv := &http2.Server{
		MaxConcurrentStreams:         h2MaxStreams,
		MaxUploadBufferPerConnection: h2ConnBuffer,
		MaxUploadBufferPerStream:     h2StreamBuffer,
		IdleTimeout:                  h.in.httpIdleTimeout,
	}
	srv.ServeConn(&readConn{TCPConn: h.client, r: h.br}, &http2.ServeConnOpts{
		Context:        h.ctx,
		Handler:        c,
		UpgradeRequest: upgrade,
		Settings:       settings,
		BaseConfig:     &http.Server{MaxHeaderBytes: h2MaxHeaderList, ErrorLog: c.errorLog()},
	})
}

// readConn is the client's connection read through the reader that holds
// its first bytes.
type readConn struct {
	*net.TCPConn
	r io.Reader
}

func (c *readConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ServeHTTP decides one stream: the first stealing client whose filter
// matches takes it, else the pod's app; filtered mirrors that match get a
// copy.
func (c *h2Conn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The route may have changed since the connection came, as between
	// HTTP/1 requests.
	rt := c.in.route(c.dst.Port())
	head := h2RequestHead(r)
	var sub *subscription
	for _, s := range rt.steal {
		if s.filter.matches(head) {
			sub = s
			break
		}
	}
	var copies []*subscription
	for _, s := range rt.mirror {
		if s.filter.matches(head) {
			copies = append(copies, s)
		}
	}
	if len(copies) > 0 {
		r = c.mirror(r, copies)
	}
	b := c.podBackend()
	if sub != nil {
		b = c.stolenBackend(sub)
		c.log.Debug("HTTP/2 request stolen", "sub", sub.String(), "method", r.Method, "path", head.path)
	}
	b.proxy.ServeHTTP(w, r)
}

// h2RequestHead is what the filters see of an HTTP/2 request: its
// method, the path of :path, and its header fields with :authority as
// Host, as an HTTP/1 request would show them.
func h2RequestHead(r *http.Request) *requestHead {
	h := &requestHead{method: r.Method, path: requestPath(r.RequestURI)}
	if r.Host != "" {
		h.headers = append(h.headers, headerLine{name: "host", value: r.Host})
	}
	for name, values := range r.Header {
		for _, v := range values {
			h.headers = append(h.headers, headerLine{name: name, value: v})
		}
	}
	return h
}

func (c *h2Conn) podBackend() *h2Backend {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pod == nil {
		c.pod = c.newBackend("the pod's app", func(ctx context.Context) (net.Conn, error) {
			c.mu.Lock()
			spare := c.spare
			c.spare = nil
			c.mu.Unlock()
			if spare != nil {
				return spare, nil
			}
			return c.in.dial(ctx, c.dst)
		}, nil)
	}
	return c.pod
}

func (c *h2Conn) stolenBackend(sub *subscription) *h2Backend {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.stolen[sub]; b != nil {
		return b
	}
	b := c.newBackend(sub.label, func(ctx context.Context) (net.Conn, error) {
		return c.in.open(ctx, sub, c.src, c.dst)
	}, func(w http.ResponseWriter, r *http.Request, err error) bool {
		if !errors.Is(err, errTunnelLost) {
			return false
		}
		// The client is gone (the request was not sent): the pod's app
		// serves meanwhile.
		c.log.Info("stealing client is gone: the pod's app answers", "sub", sub.String(), "err", err)
		c.podBackend().proxy.ServeHTTP(w, r)
		return true
	})
	c.stolen[sub] = b
	return b
}

// newBackend makes the transport and proxy of one backend; every
// connection it makes comes from dial. onError may serve a request that
// failed, and reports whether it did.
func (c *h2Conn) newBackend(name string, dial func(context.Context) (net.Conn, error), onError func(http.ResponseWriter, *http.Request, error) bool) *h2Backend {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge, nothing else
	tr := &http.Transport{
		Protocols: &protocols,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.closed {
				_ = conn.Close()
				return nil, errors.New("the client's connection ended")
			}
			c.conns = append(c.conns, conn)
			return conn, nil
		},
		// The request goes as the client sent it: no Accept-Encoding of
		// the transport's own, no proxy from the environment.
		DisableCompression:     true,
		MaxResponseHeaderBytes: h2MaxHeaderList,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerConnection: h2ConnBuffer,
			MaxReceiveBufferPerStream:     h2StreamBuffer,
		},
	}
	b := &h2Backend{name: name, tr: tr}
	b.proxy = &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Any host: the transport's dial knows the backend. The
			// request keeps its :authority, query and forwarding headers
			// as the client sent them; the agent adds none.
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "backend"
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.Out.Host = pr.In.Host
			for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[k]; ok {
					pr.Out.Header[k] = v
				}
			}
		},
		// Each piece of a response goes on at once (gRPC streaming): the
		// proxy's default for a body of unknown length, made the rule.
		FlushInterval: -1,
		BufferPool:    proxyBuffers,
		ErrorLog:      c.errorLog(),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if onError != nil && onError(w, r, err) {
				return
			}
			if r.Context().Err() != nil {
				return // the client reset the stream or left
			}
			c.log.Info("HTTP/2 request answered 502", "to", name, "method", r.Method, "path", r.URL.Path, "err", err)
			http.Error(w, fmt.Sprintf("trafficpolice: %s: %v", name, err), http.StatusBadGateway)
		},
	}
	return b
}

// proxyBuffers are the buffers responses are copied through, shared by
// all HTTP/2 connections: without them the proxy allocates 32 KiB per
// request, most of the garbage of a small gRPC call.
var proxyBuffers = &bufferPool{}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if buf, ok := b.p.Get().(*[]byte); ok {
		return *buf
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// errorLog sends the library's own complaints (a bad frame from the
// client, a backend's protocol error) to the agent's log, at debug level:
// they are about one connection.
func (c *h2Conn) errorLog() *log.Logger {
	return slog.NewLogLogger(c.log.Handler(), slog.LevelDebug)
}

func (c *h2Conn) close() {
	c.mu.Lock()
	c.closed = true
	conns := c.conns
	c.conns = nil
	if c.spare != nil {
		conns = append(conns, c.spare)
		c.spare = nil
	}
	backends := []*h2Backend{c.pod}
	for _, b := range c.stolen {
		backends = append(backends, b)
	}
	for _, b := range c.copies {
		backends = append(backends, b)
	}
	c.mu.Unlock()
	for _, b := range backends {
		if b != nil {
			b.tr.CloseIdleConnections()
		}
	}
	for _, conn := range conns {
		_ = conn.Close()
	}
}
