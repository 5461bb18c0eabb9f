package incoming

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/nat"
	"github.com/trafficpolice/trafficpolice/origdst"
	"github.com/trafficpolice/trafficpolice/splice"
)

// serveRedirected accepts the connections the nat rules redirect to ln
// until ctx ends, and hands each to its subscriptions.
func (in *Service) serveRedirected(ctx context.Context, ln *net.TCPListener, wg *sync.WaitGroup) {
	self := uint16(ln.Addr().(*net.TCPAddr).Port)
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			in.log.Warn("accept a redirected connection", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.handle(ctx, c, self)
		}()
	}
}

// handle serves one redirected connection.
func (in *Service) handle(ctx context.Context, c *net.TCPConn, self uint16) {
	_ = c.SetNoDelay(true)
	client := c
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	dst, err := origdst.Of(c)
	if err != nil || dst.Port() == self {
		// Not redirected: somebody dialed the agent's listener itself.
		in.log.Debug("connection to the redirect listener that was not redirected", "peer", src.String(), "err", err)
		splice.Abort(client)
		return
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	in.serveConn(ctx, c, src, dst)
}

// serveConn hands a connection from src to the pod's dst to the port's
// subscriptions: whole to a steal without filter, request by request with
// filters, else through to the pod's app; mirrors get their copies.
func (in *Service) serveConn(ctx context.Context, c *net.TCPConn, src, dst netip.AddrPort) {
	client := c
	stop := context.AfterFunc(ctx, func() { splice.Abort(client) })
	defer stop()

	r := in.route(dst.Port())
	var taps []*tap
	for _, s := range r.mirrorAll {
		taps = append(taps, newTap(ctx, in, s, src, dst))
	}
	defer func() {
		for _, tp := range taps {
			tp.close()
		}
	}()
	var reader io.Reader = c
	if len(taps) > 0 {
		reader = &teeReader{r: c, taps: taps}
	}
	if r.stealAll != nil {
		st, err := in.open(ctx, r.stealAll, src, dst)
		switch {
		case err == nil:
			in.log.Debug("connection stolen", "peer", src.String(), "sub", r.stealAll.String())
			relayTo(client, reader, splice.FINOnClose(st), st)
			return
		case errors.Is(err, errTunnelLost):
			// The client is gone: the pod's app serves meanwhile.
			in.log.Info("stealing client is gone: passing the connection through", "peer", src.String(), "err", err)
		default:
			// The client's app refused: so does the port.
			in.log.Info("stolen connection refused", "peer", src.String(), "port", dst.Port(), "err", err)
			splice.Abort(client)
			return
		}
	}
	switch {
	case r.stealAll == nil && r.filtered():
		h := &httpConn{in: in, ctx: ctx, client: client, src: src, dst: dst, route: r,
			br: bufio.NewReaderSize(reader, 16<<10), stolen: map[*subscription]*backend{}, taps: map[*subscription]*tap{}}
		h.serve()
	default:
		up, err := in.dial(ctx, dst)
		if err != nil {
			in.log.Info("pass-through dial failed", "dst", dst.String(), "err", err)
			splice.Abort(client)
			return
		}
		relayTo(client, reader, up, up)
	}
}

// dialPod connects to the original destination from the agent, with
// nat.Mark so that the nat rules let the connection through.
func (in *Service) dialPod(ctx context.Context, dst netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: in.dialTimeout, Control: nat.MarkControl}
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	return tc, nil
}

// backend is where one request of an HTTP-filtered connection goes: the
// pod's app (pass-through) or a stealing client's stream.
type backend struct {
	side splice.Conn
	conn interface{ SetReadDeadline(time.Time) error }
	br   *bufio.Reader
	name string
}

// alive reports whether the backend can take another request: it has not
// closed its end, and has not sent anything unasked.
func (b *backend) alive() bool {
	if b.br.Buffered() > 0 {
		return false
	}
	_ = b.conn.SetReadDeadline(time.Now())
	_, err := b.br.Peek(1)
	_ = b.conn.SetReadDeadline(time.Time{})
	return isTimeout(err)
}

// isTimeout reports a deadline error, of a socket or of a yamux stream.
func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout())
}

// httpConn decides, request by request, where the requests of one
// connection to an HTTP-filtered port go, and relays the answers back in
// order. Bytes travel unchanged.
type httpConn struct {
	in       *Service
	ctx      context.Context
	client   *net.TCPConn
	br       *bufio.Reader // the client's bytes
	src, dst netip.AddrPort
	route    route

	upstream *backend
	stolen   map[*subscription]*backend
	taps     map[*subscription]*tap
}

func (h *httpConn) serve() {
	defer h.closeAll()
	h.upstream = h.dialUpstream()
	if h.upstream != nil && !h.clientSpeaksFirst() {
		// The pod's app spoke first: not HTTP. Pass the whole connection.
		relayTo(h.client, h.br, h.upstream.side, h.upstream.br)
		h.upstream = nil
		return
	}
	for first := true; ; first = false {
		req, line, started, err := h.nextRequest(first)
		if errors.Is(err, io.EOF) || (isTimeout(err) && !started) {
			// Closed or idle between requests: end quietly.
			_ = h.client.CloseWrite()
			return
		}
		if errors.Is(err, errNotHTTP) && first {
			h.passWhole(line)
			return
		}
		if errors.Is(err, errH2Preface) {
			var spare net.Conn
			if h.upstream != nil {
				// With what the app sent already (its SETTINGS).
				spare = &readConn{TCPConn: h.upstream.side.(*net.TCPConn), r: h.upstream.br}
				h.upstream = nil
			}
			h.serveH2(spare, nil, nil)
			return
		}
		var bad *badRequest
		switch {
		case errors.As(err, &bad):
			h.in.log.Info("bad HTTP request refused", "peer", h.src.String(), "status", bad.status, "err", err)
			h.refuse(bad.status, err)
			return
		case isTimeout(err):
			h.in.log.Info("HTTP request head too slow", "peer", h.src.String(), "limit", h.in.httpHeadTimeout)
			h.refuse(http.StatusRequestTimeout, fmt.Errorf("the request head did not arrive within %s", h.in.httpHeadTimeout))
			return
		case err != nil:
			h.in.log.Debug("HTTP-filtered connection ends", "peer", h.src.String(), "err", err)
			splice.Abort(h.client)
			return
		}
		if settings, ok := h2cUpgrade(req); ok && h.upgradeToH2(req, settings) {
			return
		}
		if !h.exchange(req) {
			return
		}
	}
}

// nextRequest waits, at most the idle limit, for the next request to
// start, then reads its head within the head limit; started says whether
// any of it came. The first request may instead be the HTTP/2 client
// preface (errH2Preface, the bytes left unread).
func (h *httpConn) nextRequest(first bool) (req *requestHead, line []byte, started bool, err error) {
	_ = h.client.SetReadDeadline(time.Now().Add(h.in.httpIdleTimeout))
	if _, err := h.br.Peek(1); err != nil {
		_ = h.client.SetReadDeadline(time.Time{})
		return nil, nil, false, err
	}
	_ = h.client.SetReadDeadline(time.Now().Add(h.in.httpHeadTimeout))
	if first {
		h2, err := peekH2Preface(h.br)
		if h2 || err != nil {
			_ = h.client.SetReadDeadline(time.Time{})
			return nil, nil, true, cmp.Or(err, errH2Preface)
		}
	}
	req, line, err = readRequestHead(h.br)
	_ = h.client.SetReadDeadline(time.Time{})
	return req, line, true, err
}

// refuse answers a request that is not forwarded with status and why,
// then closes the connection (RFC 9112 §6.3 for a faulty framing: the
// rest of the bytes cannot be trusted to start a request).
func (h *httpConn) refuse(status int, why error) {
	body := fmt.Sprintf("trafficpolice: %v\n", why)
	_, _ = fmt.Fprintf(h.client, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
	_ = h.client.CloseWrite()
	// Lingering close: closing with the client's bytes unread would reset
	// the connection and could destroy the answer before the client reads
	// it; take a little of what it still sends first.
	_ = h.client.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, h.client, lingerBytes)
}

// How long and how much a refused connection is read before it is closed.
const (
	lingerTimeout = time.Second
	lingerBytes   = 256 << 10
)

// clientSpeaksFirst waits for the first byte from the client or from the
// pod's app; false means the app sent first (a server-first protocol).
// An HTTP/2 server that sends its SETTINGS without waiting for the
// client's preface (gRPC's does) is no server-first protocol: the client
// speaks HTTP/2 too, or the app will refuse it anyway. The upstream's
// bytes are kept in its reader either way.
func (h *httpConn) clientSpeaksFirst() bool {
	upc := make(chan error, 1)
	go func() {
		_, err := h.upstream.br.Peek(1)
		upc <- err
	}()
	clientc := make(chan error, 1)
	go func() {
		_, err := h.br.Peek(1)
		clientc <- err
	}()
	select {
	case <-clientc:
		_ = h.upstream.conn.SetReadDeadline(time.Now())
		err := <-upc
		_ = h.upstream.conn.SetReadDeadline(time.Time{})
		if err == nil {
			// Both spoke at once; the app's bytes are there.
			return h.upstreamGreetsHTTP2()
		}
		if !isTimeout(err) {
			splice.Abort(h.upstream.side) // it closed: dial again when needed
			h.upstream = nil
		}
		return true
	case err := <-upc:
		// Stop the client's peeker and wait for it to let go of the reader.
		_ = h.client.SetReadDeadline(time.Now())
		<-clientc
		_ = h.client.SetReadDeadline(time.Time{})
		if err == nil {
			return h.upstreamGreetsHTTP2()
		}
		splice.Abort(h.upstream.side)
		h.upstream = nil
		return true
	}
}

// passWhole sends a connection that is not HTTP/1.x (line is what was read
// of it) to the pod's app, whole.
func (h *httpConn) passWhole(line []byte) {
	if h.upstream == nil {
		if h.upstream = h.dialUpstream(); h.upstream == nil {
			splice.Abort(h.client)
			return
		}
	}
	h.in.log.Debug("not HTTP/1.x: passing the connection through", "peer", h.src.String())
	relayTo(h.client, io.MultiReader(bytesReader(line), h.br), h.upstream.side, h.upstream.br)
	h.upstream = nil
}

func bytesReader(b []byte) io.Reader { return &sliceReader{b: b} }

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func (h *httpConn) dialUpstream() *backend {
	c, err := h.in.dial(h.ctx, h.dst)
	if err != nil {
		h.in.log.Info("pass-through dial failed", "dst", h.dst.String(), "err", err)
		return nil
	}
	return &backend{side: c, conn: c, br: bufio.NewReaderSize(c, 16<<10), name: "the pod's app"}
}

// backendFor returns the backend the request goes to, opening it if
// needed; nil (with the reason) when it cannot be reached.
func (h *httpConn) backendFor(req *requestHead) (*backend, error) {
	var sub *subscription
	for _, s := range h.route.steal {
		if s.filter.matches(req) {
			sub = s
			break
		}
	}
	if sub == nil {
		if h.upstream != nil && !h.upstream.alive() {
			splice.Abort(h.upstream.side)
			h.upstream = nil
		}
		if h.upstream == nil {
			if h.upstream = h.dialUpstream(); h.upstream == nil {
				return nil, errors.New("the pod's app does not accept connections")
			}
		}
		return h.upstream, nil
	}
	if b := h.stolen[sub]; b != nil {
		if b.alive() {
			return b, nil
		}
		splice.Abort(b.side)
		delete(h.stolen, sub)
	}
	st, err := h.in.open(h.ctx, sub, h.src, h.dst)
	if errors.Is(err, errTunnelLost) {
		// The client is gone: the pod's app serves meanwhile.
		h.route.steal = slices.DeleteFunc(slices.Clone(h.route.steal), func(s *subscription) bool { return s == sub })
		return h.backendFor(req)
	}
	if err != nil {
		return nil, err
	}
	b := &backend{side: splice.FINOnClose(st), conn: st, br: bufio.NewReaderSize(st, 16<<10), name: sub.label}
	h.stolen[sub] = b
	h.in.log.Debug("request stolen", "peer", h.src.String(), "sub", sub.String(), "method", req.method, "path", req.path)
	return b, nil
}

// mirrorsFor returns the taps of the filtered mirrors the request matches.
func (h *httpConn) mirrorsFor(req *requestHead) []io.Writer {
	var ws []io.Writer
	for _, s := range h.route.mirror {
		if !s.filter.matches(req) {
			continue
		}
		tp := h.taps[s]
		if tp == nil || !tp.usable() {
			tp = newTap(h.ctx, h.in, s, h.src, h.dst)
			h.taps[s] = tp
		}
		ws = append(ws, tp)
	}
	return ws
}

// exchange sends one request to its backend and its answer back; false
// ends the connection.
func (h *httpConn) exchange(req *requestHead) bool {
	// The route may have changed since the connection came: a client
	// stopped or another one started stealing.
	h.route = h.in.route(h.dst.Port())
	b, err := h.backendFor(req)
	mirrors := h.mirrorsFor(req)
	if err != nil {
		h.in.log.Info("request answered 502", "peer", h.src.String(), "err", err)
		// Read the body off, so the next request can follow.
		if cerr := copyBody(io.MultiWriter(append([]io.Writer{io.Discard}, mirrors...)...), h.br, req.chunked, req.contentLength); cerr != nil {
			splice.Abort(h.client)
			return false
		}
		return h.badGateway(err) && !req.closeAfter
	}
	out := io.Writer(b.side)
	if len(mirrors) > 0 {
		out = io.MultiWriter(append([]io.Writer{b.side}, mirrors...)...)
	}
	if _, err := out.Write(req.raw); err != nil {
		h.in.log.Info("request could not be sent", "to", b.name, "err", err)
		h.badGateway(err)
		return false
	}
	// The body goes up while the answer comes down: a server may answer
	// (100 Continue, or early) before it has read all of it.
	bodyDone := make(chan error, 1)
	go func() { bodyDone <- copyBody(out, h.br, req.chunked, req.contentLength) }()

	var res *responseHead
	for {
		res, err = readResponseHead(b.br)
		if err != nil {
			<-h.abortBody(bodyDone)
			h.in.log.Info("no answer to a request", "from", b.name, "err", err)
			h.badGateway(err)
			return false
		}
		if _, err := h.client.Write(res.raw); err != nil {
			h.abortBody(bodyDone)
			splice.Abort(h.client)
			return false
		}
		if res.status/100 != 1 || res.status == 101 {
			break
		}
	}
	kind := res.body(req)
	switch kind {
	case bodyTunnel:
		if err := <-bodyDone; err != nil {
			splice.Abort(h.client)
			return false
		}
		relayTo(h.client, h.br, b.side, b.br)
		h.forget(b)
		return false
	case bodyLength, bodyChunked:
		err = copyBody(h.client, b.br, kind == bodyChunked, res.contentLength)
	case bodyUntilClose:
		_, err = io.Copy(h.client, b.br)
	}
	if err != nil {
		h.abortBody(bodyDone)
		splice.Abort(h.client)
		return false
	}
	if err := <-bodyDone; err != nil {
		splice.Abort(h.client)
		return false
	}
	if kind == bodyUntilClose || res.closeAfter || req.closeAfter {
		_ = h.client.CloseWrite()
		return false
	}
	return true
}

// abortBody stops a body copy that can no longer matter: the client is
// cut off by the caller. It returns the copy's result channel.
func (h *httpConn) abortBody(done chan error) chan error {
	_ = h.client.SetReadDeadline(time.Now())
	return done
}

// badGateway answers a request that could not be served with 502 and says
// whether the connection can go on.
func (h *httpConn) badGateway(why error) bool {
	body := fmt.Sprintf("trafficpolice: %v\n", why)
	_, err := fmt.Fprintf(h.client, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return err == nil
}

// forget drops b after the connection was handed to it whole.
func (h *httpConn) forget(b *backend) {
	if h.upstream == b {
		h.upstream = nil
	}
	for s, o := range h.stolen {
		if o == b {
			delete(h.stolen, s)
		}
	}
}

func (h *httpConn) closeAll() {
	if h.upstream != nil {
		_ = h.upstream.side.Close()
	}
	for _, b := range h.stolen {
		_ = b.side.Close()
	}
	for _, tp := range h.taps {
		tp.close()
	}
	_ = h.client.Close()
}

// relayTo joins the client's connection (read through cr, which may hold
// bytes already read from it) to the other side (read through or) until
// both directions end.
func relayTo(client *net.TCPConn, cr io.Reader, other splice.Conn, or io.Reader) {
	splice.Both(context.Background(), splice.Side{Conn: client, Reader: cr}, splice.Side{Conn: other, Reader: or})
}
