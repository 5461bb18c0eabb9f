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

func isToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// readHead reads a head (start line through the empty line) verbatim.
// The first line must satisfy first, or errNotHTTP is returned with
// nothing consumed beyond what the caller peeked. io.EOF before any byte
// is returned as io.EOF.
func readHead(br *bufio.Reader, first func([]byte) bool) ([]byte, error) {
	var raw []byte
	for n := 0; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("HTTP head line longer than %d bytes", br.Size())
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
			return nil, fmt.Errorf("HTTP head longer than %d bytes", maxHeadSize)
		}
		if n > 0 && (len(line) == 2 && line[0] == '\r' || len(line) == 1) {
			return raw, nil
		}
	}
}

// splitHead splits a raw head into its start line and header lines
// (obsolete line folding is joined to the previous line).
func splitHead(raw []byte) (string, []headerLine, error) {
	lines := strings.Split(strings.TrimRight(string(raw), "\r\n"), "\n")
	start := strings.TrimRight(lines[0], "\r")
	var hs []headerLine
	for _, l := range lines[1:] {
		l = strings.TrimRight(l, "\r")
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(hs) > 0 {
			hs[len(hs)-1].value += " " + strings.TrimSpace(l)
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || !isToken([]byte(name)) {
			return "", nil, fmt.Errorf("malformed HTTP header line %q", l)
		}
		hs = append(hs, headerLine{name: name, value: strings.TrimSpace(value)})
	}
	return start, hs, nil
}

// framing reads the body framing and connection options from headers.
func framing(hs []headerLine) (chunked bool, length int64, closeConn, keepAlive bool, err error) {
	length = -1
	for _, h := range hs {
		switch strings.ToLower(h.name) {
		case "transfer-encoding":
			codings := strings.Split(h.value, ",")
			chunked = strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked")
		case "content-length":
			n, perr := strconv.ParseInt(strings.TrimSpace(h.value), 10, 64)
			if perr != nil || n < 0 {
				return false, 0, false, false, fmt.Errorf("invalid Content-Length %q", h.value)
			}
			if length >= 0 && length != n {
				return false, 0, false, false, fmt.Errorf("conflicting Content-Length values %d and %d", length, n)
			}
			length = n
		case "connection":
			for _, o := range strings.Split(h.value, ",") {
				switch strings.ToLower(strings.TrimSpace(o)) {
				case "close":
					closeConn = true
				case "keep-alive":
					keepAlive = true
				}
			}
		}
	}
	if chunked {
		length = -1 // Transfer-Encoding wins (RFC 9112 §6.3)
	}
	return chunked, length, closeConn, keepAlive, nil
}

// readRequestHead reads the next request head. It returns errNotHTTP
// (with the bytes of the line it read) when the connection does not speak
// HTTP/1.x, io.EOF when the client closed between requests.
func readRequestHead(br *bufio.Reader) (*requestHead, []byte, error) {
	raw, err := readHead(br, looksLikeRequestLine)
	if err != nil {
		return nil, raw, err
	}
	start, hs, err := splitHead(raw)
	if err != nil {
		return nil, nil, err
	}
	parts := strings.Split(start, " ")
	h := &requestHead{raw: raw, method: parts[0], version: parts[len(parts)-1], headers: hs}
	target := strings.Join(parts[1:len(parts)-1], " ")
	h.path = requestPath(target)
	var keepAlive bool
	h.chunked, h.contentLength, h.closeAfter, keepAlive, err = framing(hs)
	if err != nil {
		return nil, nil, err
	}
	if h.version == "HTTP/1.0" && !keepAlive {
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
	raw, err := readHead(br, func(line []byte) bool { return bytes.HasPrefix(line, []byte("HTTP/1.")) })
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
	h := &responseHead{raw: raw, status: status}
	var keepAlive bool
	h.chunked, h.contentLength, h.closeAfter, keepAlive, err = framing(hs)
	if err != nil {
		return nil, err
	}
	if parts[0] == "HTTP/1.0" && !keepAlive {
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

func copyChunked(w io.Writer, br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("HTTP chunk size: %w", noEOF(err))
		}
		sizeText, _, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), ";")
		size, perr := strconv.ParseUint(strings.TrimSpace(sizeText), 16, 63)
		if perr != nil {
			return fmt.Errorf("HTTP chunk size %q is not hexadecimal", sizeText)
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
		if _, err := io.CopyN(w, br, int64(size)+2); err != nil { // data and CRLF
			return fmt.Errorf("HTTP chunk: %w", noEOF(err))
		}
	}
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
