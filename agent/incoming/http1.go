package incoming

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// HTTP/1.x framing for the HTTP filter: just enough of RFC 9112 to find
// where each request and each response ends, so that requests can be sent
// one by one to different backends while every byte travels as it came
// (no re-encoding: the pod's app sees exactly what the client sent).

// maxHeadSize bounds a request or response head (start line and headers).
const maxHeadSize = 64 << 10

// errNotHTTP means the bytes do not start an HTTP/1.x request.
var errNotHTTP = errors.New("not an HTTP/1.x request")

// badRequest is a request that speaks HTTP/1.x but breaks RFC 9112 where
// the RFC says to reject it, or where an app behind us could frame it
// otherwise than we do (request smuggling). It is answered with status
// and the connection closed; it is never forwarded.
type badRequest struct {
	status int // 400, or 431 for a head too large
	why    string
}

func (e *badRequest) Error() string { return e.why }

func bad(format string, args ...any) error {
	return &badRequest{status: 400, why: fmt.Sprintf(format, args...)}
}

type headerLine struct{ name, value string }

// requestHead is a parsed request head; raw holds its bytes as received.
type requestHead struct {
	raw           []byte
	method, path  string
	version       string // "HTTP/1.1"
	headers       []headerLine
	chunked       bool
	contentLength int64 // -1: none given
	closeAfter    bool  // the client asked to close after this exchange
}

// responseHead is a parsed response head; raw holds its bytes as received.
type responseHead struct {
	raw           []byte
	status        int
	chunked       bool
	untilClose    bool // a Transfer-Encoding without chunked last
	contentLength int64
	closeAfter    bool
}

// looksLikeRequestLine reports whether line (with or without CRLF) has the
// shape METHOD SP TARGET SP HTTP/1.x.
func looksLikeRequestLine(line []byte) bool {
	line = bytes.TrimRight(line, "\r\n")
	method, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok || len(method) == 0 || !isToken(method) {
		return false
	}
	i := bytes.LastIndexByte(rest, ' ')
	if i <= 0 {
		return false
	}
	v := rest[i+1:]
	return bytes.Equal(v, []byte("HTTP/1.1")) || bytes.Equal(v, []byte("HTTP/1.0"))
}

// couldStartRequestLine reports whether b may be the start of a request
// line: a method (a token) and then a space, or a token cut short.
func couldStartRequestLine(b []byte) bool {
	for i, c := range b {
		if c == ' ' {
			return i > 0
		}
		if !isToken(b[i : i+1]) {
			return false
		}
	}
	return true
}

func isToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// readHead reads a head (start line through the empty line) verbatim.
// The first line must satisfy first, and what arrives of it before its
// end must satisfy start, or errNotHTTP is returned with the bytes read.
// io.EOF before any byte is returned as io.EOF.
func readHead(br *bufio.Reader, first, start func([]byte) bool) ([]byte, error) {
	// Bytes that cannot start the first line tell a protocol that sends
	// no newline soon (TLS, a binary one) without waiting for one.
	if b, _ := br.Peek(br.Buffered()); len(b) > 0 && !start(b) {
		_, _ = br.Discard(len(b))
		return append([]byte(nil), b...), errNotHTTP
	}
	var raw []byte
	for n := 0; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if n == 0 && !start(line) {
				return append([]byte(nil), line...), errNotHTTP
			}
			return nil, &badRequest{status: 431, why: fmt.Sprintf("HTTP head line longer than %d bytes", br.Size())}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(raw) == 0 && len(line) == 0 {
				return nil, io.EOF
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read HTTP head: %w", err)
		}
		if n == 0 && !first(line) {
			return append([]byte(nil), line...), errNotHTTP
		}
		raw = append(raw, line...)
		if len(raw) > maxHeadSize {
			return nil, &badRequest{status: 431, why: fmt.Sprintf("HTTP head longer than %d bytes", maxHeadSize)}
		}
		if n > 0 && (len(line) == 2 && line[0] == '\r' || len(line) == 1) {
			return raw, nil
		}
	}
}

// splitHead splits a raw head into its start line and header lines. It
// rejects what RFC 9112 tells a server to reject: obsolete line folding
// (§5.2), white space between a field name and its colon (§5.1), a bare
// CR (§2.2), and CR or NUL inside a field value (RFC 9110 §5.5). A bare LF
// ends a line, as §2.2 allows.
func splitHead(raw []byte) (string, []headerLine, error) {
	lines := strings.Split(strings.TrimRight(string(raw), "\r\n"), "\n")
	var hs []headerLine
	for i, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		if strings.ContainsAny(l, "\r\x00") {
			return "", nil, bad("bare CR or NUL in HTTP head line %q", l)
		}
		lines[i] = l
	}
	for _, l := range lines[1:] {
		if l == "" {
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			return "", nil, bad("obsolete line folding in HTTP header line %q", l)
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || !isToken([]byte(name)) {
			return "", nil, bad("malformed HTTP header line %q", l)
		}
		hs = append(hs, headerLine{name: name, value: strings.Trim(value, " \t")})
	}
	return lines[0], hs, nil
}

// bodyFraming is what the headers say about a message's body and its
// connection.
type bodyFraming struct {
	// te: a Transfer-Encoding was given; chunked: its last coding is
	// chunked; chunkedTwice: chunked appears more than once, or before
	// the last coding.
	te, chunked, chunkedNotLast bool
	length                      int64 // Content-Length, -1 when none
	closeConn, keepAlive        bool
}

// framing reads the body framing and connection options from headers.
// Content-Length must be digits only, and repeated values must agree.
func framing(hs []headerLine) (bodyFraming, error) {
	f := bodyFraming{length: -1}
	var codings []string
	for _, h := range hs {
		switch strings.ToLower(h.name) {
		case "transfer-encoding":
			f.te = true
			for _, c := range strings.Split(h.value, ",") {
				if c = strings.ToLower(strings.Trim(c, " \t")); c != "" {
					codings = append(codings, c)
				}
			}
		case "content-length":
			n, err := parseContentLength(h.value)
			if err != nil {
				return f, err
			}
			if f.length >= 0 && f.length != n {
				return f, bad("conflicting Content-Length values %d and %d", f.length, n)
			}
			f.length = n
		case "connection":
			for _, o := range strings.Split(h.value, ",") {
				switch strings.ToLower(strings.TrimSpace(o)) {
				case "close":
					f.closeConn = true
				case "keep-alive":
					f.keepAlive = true
				}
			}
		}
	}
	for i, c := range codings {
		if c != "chunked" {
			continue
		}
		if i == len(codings)-1 {
			f.chunked = true
		} else {
			f.chunkedNotLast = true
		}
	}
	return f, nil
}

// parseContentLength takes 1*DIGIT (RFC 9110 §8.6): no sign, no spaces,
// no list, nothing that overflows.
func parseContentLength(v string) (int64, error) {
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, bad("invalid Content-Length %q: want digits only", v)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, bad("invalid Content-Length %q: %v", v, err)
	}
	return n, nil
}

// readRequestHead reads the next request head. It returns errNotHTTP
// (with the bytes of the line it read) when the connection does not speak
// HTTP/1.x, io.EOF when the client closed between requests, and a
// *badRequest for a request to refuse.
func readRequestHead(br *bufio.Reader) (*requestHead, []byte, error) {
	raw, err := readHead(br, looksLikeRequestLine, couldStartRequestLine)
	if err != nil {
		return nil, raw, err
	}
	start, hs, err := splitHead(raw)
	if err != nil {
		return nil, nil, err
	}
	// method SP request-target SP HTTP-version, single spaces (§3).
	parts := strings.Split(start, " ")
	if len(parts) != 3 || parts[1] == "" || strings.ContainsAny(parts[1], "\t\x7f") {
		return nil, nil, bad("malformed HTTP request line %q: want METHOD SP TARGET SP VERSION", start)
	}
	h := &requestHead{raw: raw, method: parts[0], version: parts[2], headers: hs}
	h.path = requestPath(parts[1])
	hosts := 0
	for _, l := range hs {
		if strings.EqualFold(l.name, "host") {
			hosts++
		}
	}
	if hosts > 1 {
		return nil, nil, bad("%d Host header lines: want one", hosts)
	}
	f, err := framing(hs)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case f.te && h.version == "HTTP/1.0":
		return nil, nil, bad("Transfer-Encoding in an HTTP/1.0 request")
	case f.te && (!f.chunked || f.chunkedNotLast):
		return nil, nil, bad("Transfer-Encoding without chunked as its last and only chunked coding: the body's length cannot be known")
	case f.te && f.length >= 0:
		return nil, nil, bad("both Transfer-Encoding and Content-Length")
	}
	h.chunked, h.contentLength, h.closeAfter = f.chunked, f.length, f.closeConn
	if h.version == "HTTP/1.0" && !f.keepAlive {
		h.closeAfter = true
	}
	return h, nil, nil
}

// requestPath is the path of a request target: origin form ("/a?b"),
// absolute form ("http://h/a?b"), or as is ("*", authority form).
func requestPath(target string) string {
	if i := strings.Index(target, "://"); i > 0 && !strings.HasPrefix(target, "/") {
		rest := target[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			target = rest[j:]
		} else {
			target = "/"
		}
	}
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	return target
}

// readResponseHead reads the next response head.
func readResponseHead(br *bufio.Reader) (*responseHead, error) {
	const prefix = "HTTP/1."
	raw, err := readHead(br, func(line []byte) bool { return bytes.HasPrefix(line, []byte(prefix)) },
		func(b []byte) bool { return bytes.HasPrefix([]byte(prefix), b[:min(len(b), len(prefix))]) })
	if errors.Is(err, errNotHTTP) {
		return nil, errors.New("the answer is not an HTTP/1.x response")
	}
	if err != nil {
		return nil, err
	}
	start, hs, err := splitHead(raw)
	if err != nil {
		return nil, err
	}
	parts := strings.SplitN(start, " ", 3)
	if len(parts) < 2 {
		return nil, fmt.Errorf("malformed HTTP status line %q", start)
	}
	status, err := strconv.Atoi(parts[1])
	if err != nil || status < 100 || status > 999 {
		return nil, fmt.Errorf("malformed HTTP status line %q", start)
	}
	f, err := framing(hs)
	if err != nil {
		return nil, err
	}
	h := &responseHead{raw: raw, status: status, chunked: f.chunked && !f.chunkedNotLast, contentLength: f.length, closeAfter: f.closeConn}
	switch {
	case f.te && !h.chunked:
		// Not chunked last: the body runs until the server closes
		// (RFC 9112 §6.3, 4), whatever Content-Length says.
		h.untilClose = true
	case f.te:
		h.contentLength = -1 // Transfer-Encoding wins (§6.3, 3)
	}
	if parts[0] == "HTTP/1.0" && !f.keepAlive {
		h.closeAfter = true
	}
	return h, nil
}

// responseBody says how a response's body is framed, given its request.
type bodyKind int

const (
	bodyNone bodyKind = iota
	bodyLength
	bodyChunked
	bodyUntilClose
	bodyTunnel // 101 Switching Protocols, or a successful CONNECT
)

func (r *responseHead) body(req *requestHead) bodyKind {
	switch {
	case r.status == 101, req.method == "CONNECT" && r.status/100 == 2:
		return bodyTunnel
	case r.status/100 == 1, r.status == 204, r.status == 304, req.method == "HEAD":
		return bodyNone
	case r.untilClose:
		return bodyUntilClose
	case r.chunked:
		return bodyChunked
	case r.contentLength >= 0:
		return bodyLength
	}
	return bodyUntilClose
}

// copyBody copies one message body from br to w, verbatim (chunk sizes,
// extensions and trailers included).
func copyBody(w io.Writer, br *bufio.Reader, chunked bool, length int64) error {
	if chunked {
		return copyChunked(w, br)
	}
	if length <= 0 {
		return nil
	}
	n, err := io.CopyN(w, br, length)
	if err != nil && n < length {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("HTTP body (%d of %d bytes): %w", n, length, err)
	}
	return err
}

// copyChunked copies a chunked body verbatim, checking its framing as
// RFC 9112 §7.1 has it: each chunk-size line is hex digits, then optional
// extensions, then CRLF; each chunk's data is followed by CRLF.
func copyChunked(w io.Writer, br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("HTTP chunk size: %w", noEOF(err))
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return err
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		if size == 0 {
			// Trailers, then the empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return fmt.Errorf("HTTP trailer: %w", noEOF(err))
				}
				if _, err := w.Write(line); err != nil {
					return err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := io.CopyN(w, br, int64(size)); err != nil {
			return fmt.Errorf("HTTP chunk: %w", noEOF(err))
		}
		var crlf [2]byte
		if _, err := io.ReadFull(br, crlf[:]); err != nil {
			return fmt.Errorf("HTTP chunk end: %w", noEOF(err))
		}
		if crlf != [2]byte{'\r', '\n'} {
			return fmt.Errorf("HTTP chunk of %d bytes is followed by %q, want CRLF", size, crlf[:])
		}
		if _, err := w.Write(crlf[:]); err != nil {
			return err
		}
	}
}

// parseChunkSize reads a chunk-size line: 1*HEXDIG, then optional
// white space and ";" extensions, then CRLF.
func parseChunkSize(line []byte) (uint64, error) {
	body, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok {
		return 0, fmt.Errorf("HTTP chunk size line %q does not end with CRLF", line)
	}
	digits := body
	if i := bytes.IndexAny(body, " \t;"); i >= 0 {
		rest := bytes.TrimLeft(body[i:], " \t")
		if len(rest) > 0 && rest[0] != ';' {
			return 0, fmt.Errorf("HTTP chunk size line %q: junk after the size", line)
		}
		digits = body[:i]
	}
	if len(digits) == 0 || len(digits) > 16 || len(bytes.TrimLeft(digits, "0123456789abcdefABCDEF")) != 0 {
		return 0, fmt.Errorf("HTTP chunk size %q is not 1 to 16 hexadecimal digits", digits)
	}
	size, err := strconv.ParseUint(string(digits), 16, 63)
	if err != nil {
		return 0, fmt.Errorf("HTTP chunk size %q: %w", digits, err)
	}
	return size, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
