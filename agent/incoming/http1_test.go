package incoming

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

func TestReadRequestHeadKeepsBytesAndFraming(t *testing.T) {
	raw := "POST /api/x?q=1 HTTP/1.1\r\nHost: pod\r\nX-User:  alice \r\nTransfer-Encoding: gzip, chunked\r\n\r\n" +
		"5;ext=1\r\nhello\r\n0\r\nTrailer: yes\r\n\r\n" + "GET / HTTP/1.0\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(raw))
	h, _, err := readRequestHead(br)
	if err != nil {
		t.Fatal(err)
	}
	if h.method != "POST" || h.path != "/api/x" || !h.chunked || h.closeAfter {
		t.Errorf("head = %+v", h)
	}
	if !strings.HasPrefix(raw, string(h.raw)) || !strings.HasSuffix(string(h.raw), "\r\n\r\n") {
		t.Errorf("raw head %q is not the bytes received", h.raw)
	}
	var body bytes.Buffer
	if err := copyBody(&body, br, h.chunked, h.contentLength); err != nil {
		t.Fatal(err)
	}
	if want := "5;ext=1\r\nhello\r\n0\r\nTrailer: yes\r\n\r\n"; body.String() != want {
		t.Errorf("chunked body copied as %q, want it verbatim %q", body.String(), want)
	}
	h2, _, err := readRequestHead(br)
	if err != nil {
		t.Fatal(err)
	}
	if h2.method != "GET" || !h2.closeAfter || h2.contentLength != -1 {
		t.Errorf("HTTP/1.0 head = %+v, want close after it", h2)
	}
	if _, _, err := readRequestHead(br); !errors.Is(err, io.EOF) {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

func TestReadRequestHeadTellsOtherProtocols(t *testing.T) {
	for _, in := range []string{
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", // h2c with prior knowledge
		"hello raw\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", // TLS ClientHello
		"GET /x\r\n",                                     // HTTP/0.9
	} {
		_, line, err := readRequestHead(bufio.NewReader(strings.NewReader(in)))
		if !errors.Is(err, errNotHTTP) {
			t.Errorf("%q: err %v, want errNotHTTP", in, err)
			continue
		}
		if !strings.HasPrefix(in, string(line)) || len(line) == 0 {
			t.Errorf("%q: returned line %q, want the bytes read", in, line)
		}
	}
}

func TestReadRequestHeadRejectsBadFraming(t *testing.T) {
	for _, in := range []string{
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"GET / HTTP/1.1\r\nno colon\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n", // cut short
	} {
		if _, _, err := readRequestHead(bufio.NewReader(strings.NewReader(in))); err == nil || errors.Is(err, errNotHTTP) {
			t.Errorf("%q: err %v, want a framing error", in, err)
		}
	}
}

func TestResponseBodyKinds(t *testing.T) {
	get := &requestHead{method: "GET"}
	cases := []struct {
		res  string
		req  *requestHead
		want bodyKind
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", get, bodyLength},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", get, bodyChunked},
		{"HTTP/1.1 200 OK\r\n\r\n", get, bodyUntilClose},
		{"HTTP/1.1 204 No Content\r\n\r\n", get, bodyNone},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", get, bodyNone},
		{"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", &requestHead{method: "HEAD"}, bodyNone},
		{"HTTP/1.1 100 Continue\r\n\r\n", get, bodyNone},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", get, bodyTunnel},
		{"HTTP/1.1 200 Connection established\r\n\r\n", &requestHead{method: "CONNECT"}, bodyTunnel},
	}
	for _, c := range cases {
		r, err := readResponseHead(bufio.NewReader(strings.NewReader(c.res)))
		if err != nil {
			t.Fatalf("%q: %v", c.res, err)
		}
		if got := r.body(c.req); got != c.want {
			t.Errorf("%q to %s: body kind %d, want %d", c.res, c.req.method, got, c.want)
		}
	}
	if _, err := readResponseHead(bufio.NewReader(strings.NewReader("SSH-2.0-x\r\n"))); err == nil {
		t.Error("a non-HTTP answer was taken for a response")
	}
}

func TestRequestPath(t *testing.T) {
	for target, want := range map[string]string{
		"/a/b?x=1":             "/a/b",
		"/a#frag":              "/a",
		"http://host:80/p?q=1": "/p",
		"http://host":          "/",
		"*":                    "*",
		"host:443":             "host:443",
	} {
		if got := requestPath(target); got != want {
			t.Errorf("requestPath(%q) = %q, want %q", target, got, want)
		}
	}
}

func TestHTTPFilterMatches(t *testing.T) {
	head := func(s string) *requestHead {
		h, _, err := readRequestHead(bufio.NewReader(strings.NewReader(s)))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	alice := head("GET /api/users?id=1 HTTP/1.1\r\nHost: pod\r\nX-User: Alice\r\n\r\n")
	bob := head("post /other HTTP/1.1\r\nx-user: bob\r\n\r\n")
	leaf := func(k proto.FilterKind, p string) proto.HTTPFilter { return proto.HTTPFilter{Kind: k, Pattern: p} }
	cases := []struct {
		f          proto.HTTPFilter
		alice, bob bool
	}{
		{leaf(proto.FilterHeader, "^x-user: alice$"), true, false},
		{leaf(proto.FilterHeader, "X-USER: (alice|bob)"), true, true},
		{leaf(proto.FilterHeader, "^host: pod$"), true, false},
		{leaf(proto.FilterPath, "^/api/"), true, false},
		{leaf(proto.FilterPath, "id=1"), false, false}, // the query is not the path
		{leaf(proto.FilterMethod, "POST"), false, true},
		{proto.HTTPFilter{Kind: proto.FilterAllOf, Filters: []proto.HTTPFilter{leaf(proto.FilterPath, "^/api"), leaf(proto.FilterHeader, "x-user: alice")}}, true, false},
		{proto.HTTPFilter{Kind: proto.FilterAllOf, Filters: []proto.HTTPFilter{leaf(proto.FilterPath, "^/api"), leaf(proto.FilterHeader, "x-user: bob")}}, false, false},
		{proto.HTTPFilter{Kind: proto.FilterAnyOf, Filters: []proto.HTTPFilter{leaf(proto.FilterMethod, "post"), leaf(proto.FilterPath, "^/api")}}, true, true},
	}
	for _, c := range cases {
		f, err := compileFilter(c.f)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.matches(alice); got != c.alice {
			t.Errorf("%s on alice's request: %v, want %v", f, got, c.alice)
		}
		if got := f.matches(bob); got != c.bob {
			t.Errorf("%s on bob's request: %v, want %v", f, got, c.bob)
		}
	}
	if f, err := compileFilter(proto.HTTPFilter{}); f != nil || err != nil || !f.matches(bob) {
		t.Errorf("no filter: %v, %v; want nil, matching everything", f, err)
	}
}

func TestCompileFilterNamesTheBadPart(t *testing.T) {
	for _, c := range []struct {
		f    proto.HTTPFilter
		want string
	}{
		{proto.HTTPFilter{Kind: proto.FilterHeader, Pattern: "(unclosed"}, `http_filter: header filter "(unclosed" is not a valid regular expression`},
		{proto.HTTPFilter{Kind: proto.FilterMethod, Pattern: "GE T"}, `method filter "GE T" is not an HTTP method`},
		{proto.HTTPFilter{Kind: proto.FilterAnyOf, Filters: []proto.HTTPFilter{{Kind: proto.FilterPath, Pattern: "["}}}, "http_filter.any_of[0]: path filter"},
		{proto.HTTPFilter{Kind: proto.FilterAllOf}, "all_of has no member filters"},
	} {
		if _, err := compileFilter(c.f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("compileFilter(%+v) = %v, want an error containing %q", c.f, err, c.want)
		}
	}
}
