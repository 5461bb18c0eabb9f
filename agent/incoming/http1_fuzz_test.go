package incoming

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

// consumed is how much of data a reader stack has taken: what left the
// bytes.Reader minus what bufio still holds.
func consumed(data []byte, r *bytes.Reader, br *bufio.Reader) int {
	return len(data) - r.Len() - br.Buffered()
}

// FuzzReadRequest feeds arbitrary bytes to the request parser and, when it
// takes a head, to the body copier. It must never panic; what it takes must
// be the bytes as they came; and where Go's own server parser takes the
// same request too, both must agree on where the request ends — a
// disagreement is how request smuggling starts (the agent would split a
// connection's requests otherwise than the pod's app).
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: p\r\n\r\n",
		"POST /a?b HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.1\nHost: p\n\n",
		"GET / HTTP/1.1\r\nHost: p\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"\x16\x03\x01\x00\x05hello",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		br := bufio.NewReaderSize(r, 16<<10)
		h, line, err := readRequestHead(br)
		if errors.Is(err, errNotHTTP) {
			if !bytes.HasPrefix(data, line) || len(line) == 0 {
				t.Fatalf("not HTTP, but the bytes handed back %q are not the start of the input", line)
			}
			return
		}
		if err != nil {
			return
		}
		if !bytes.HasPrefix(data, h.raw) || consumed(data, r, br) != len(h.raw) {
			t.Fatalf("head %q is not the %d bytes taken from the input", h.raw, consumed(data, r, br))
		}
		if h.chunked && h.contentLength >= 0 {
			t.Fatalf("both chunked and Content-Length %d taken", h.contentLength)
		}
		if !isToken([]byte(h.method)) || (h.version != "HTTP/1.1" && h.version != "HTTP/1.0") {
			t.Fatalf("taken with method %q, version %q", h.method, h.version)
		}
		berr := copyBody(io.Discard, br, h.chunked, h.contentLength)
		ours := consumed(data, r, br)

		gr := bytes.NewReader(data)
		gbr := bufio.NewReaderSize(gr, 16<<10)
		req, gerr := http.ReadRequest(gbr)
		if gerr != nil || berr != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		if theirs := consumed(data, gr, gbr); theirs != ours {
			t.Fatalf("request ends after %d bytes for the agent, %d for net/http (chunked %v, length %d; Go: %v %d)",
				ours, theirs, h.chunked, h.contentLength, req.TransferEncoding, req.ContentLength)
		}
	})
}
