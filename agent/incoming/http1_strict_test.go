package incoming

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// Requests whose framing RFC 9112 calls faulty, or that an app behind us
// could frame otherwise than we do (request smuggling): each is a bad
// request, never forwarded.
func TestRequestFramingIsStrict(t *testing.T) {
	const get = "GET / HTTP/1.1\r\nHost: p\r\n"
	for _, in := range []string{
		get + "Transfer-Encoding: chunked, gzip\r\n\r\n",                         // chunked not last (§6.3)
		get + "Transfer-Encoding: gzip\r\n\r\n",                                  // no chunked at all
		get + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", // chunked twice
		get + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",          // both (§6.1)
		"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",                   // TE in HTTP/1.0 (§6.1)
		get + "Content-Length: +5\r\n\r\n",
		get + "Content-Length: 5 5\r\n\r\n",
		get + "Content-Length: 5, 5\r\n\r\n",
		get + "Content-Length: 0x5\r\n\r\n",
		get + "Content-Length: \r\n\r\n",
		get + "Content-Length: 99999999999999999999\r\n\r\n",
		get + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", // two Hosts (RFC 9112 §3.2)
		get + "X-Folded: a\r\n b\r\n\r\n",              // obs-fold (§5.2)
		get + "X-Name : v\r\n\r\n",                     // space before the colon (§5.1)
		get + "X-CR: a\rb\r\n\r\n",                     // bare CR (§2.2)
		get + "X-NUL: a\x00b\r\n\r\n",                  // NUL in a value (RFC 9110 §5.5)
		"GET /a b HTTP/1.1\r\nHost: p\r\n\r\n",         // space in the target (§3)
		"GET  / HTTP/1.1\r\nHost: p\r\n\r\n",           // two spaces
	} {
		h, _, err := readRequestHead(bufio.NewReader(strings.NewReader(in)))
		if err == nil || errors.Is(err, errNotHTTP) || errors.Is(err, io.EOF) {
			t.Errorf("%q: head %+v, err %v; want a bad request", in, h, err)
		}
	}
	for _, in := range []string{
		get + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", // duplicates that agree
		get + "Content-Length:  7 \r\n\r\n",                    // OWS around the value
		get + "Transfer-Encoding: gzip ,Chunked\r\n\r\n",
		get + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		if _, _, err := readRequestHead(bufio.NewReader(strings.NewReader(in))); err != nil {
			t.Errorf("%q: %v, want it taken", in, err)
		}
	}
}

func TestChunkedBodyIsStrict(t *testing.T) {
	for _, body := range []string{
		"3\r\nabcXY0\r\n\r\n",     // no CRLF after the data
		"3\r\nabc\n0\r\n\r\n",     // LF alone after the data
		"3\nabc\r\n0\r\n\r\n",     // LF alone after the size
		" 3\r\nabc\r\n0\r\n\r\n",  // space before the size
		"+3\r\nabc\r\n0\r\n\r\n",  // sign
		"0x3\r\nabc\r\n0\r\n\r\n", // prefix
		"3x\r\nabc\r\n0\r\n\r\n",  // junk after the size
		"\r\nabc\r\n0\r\n\r\n",    // no size
		"11111111111111111\r\n",   // 17 hex digits
	} {
		var out bytes.Buffer
		if err := copyBody(&out, bufio.NewReader(strings.NewReader(body)), true, -1); err == nil {
			t.Errorf("%q: copied as %q, want an error", body, out.String())
		}
	}
	for _, body := range []string{"3\r\nabc\r\n0\r\n\r\n", "3;a=b\r\nabc\r\n0\r\n\r\n", "3 ;a=b\r\nabc\r\n0\r\nT: x\r\n\r\n", "A\r\n0123456789\r\n0\r\n\r\n"} {
		var out bytes.Buffer
		if err := copyBody(&out, bufio.NewReader(strings.NewReader(body)), true, -1); err != nil || out.String() != body {
			t.Errorf("%q: copied %q, %v; want it verbatim", body, out.String(), err)
		}
	}
}

// A response whose last transfer coding is not chunked runs until the
// connection closes, whatever Content-Length says (RFC 9112 §6.3).
func TestResponseTransferEncodingNotChunkedRunsUntilClose(t *testing.T) {
	res, err := readResponseHead(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if k := res.body(&requestHead{method: "GET"}); k != bodyUntilClose {
		t.Errorf("body kind %d, want until close (%d)", k, bodyUntilClose)
	}
}

// filteredConn is a connection to a port with a filtered steal, so that
// the agent parses its requests; the pod's app serves what is not stolen.
func filteredConn(t *testing.T, in *Service) (*bufio.Reader, func(string)) {
	t.Helper()
	pod := podApp(t, nil)
	alice := newTestClient(t, "alice", proto.ModeSteal)
	if _, err := in.subscribe(alice.t, steal(pod.Port(), "alice", header("^x-user: alice$"))); err != nil {
		t.Fatal(err)
	}
	c := connect(t, in, pod)
	return bufio.NewReader(c), func(s string) {
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
}

func wantClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if b, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after the answer: byte %q, %v; want the connection closed", b, err)
	}
}

func TestBadRequestIsAnswered400AndClosed(t *testing.T) {
	in, _ := newTestIncoming(t)
	br, send := filteredConn(t, in)
	send("GET /ok HTTP/1.1\r\nHost: p\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("a good request first: %v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	send("POST /x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a request with chunked not last: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 400 || !strings.Contains(string(body), "trafficpolice") || !res.Close {
		t.Fatalf("answer %d %q (close %v), want trafficpolice's 400 and Connection: close", res.StatusCode, body, res.Close)
	}
	wantClosed(t, br)
}

func TestIdleKeepAliveConnectionIsClosed(t *testing.T) {
	in, _ := newTestIncoming(t)
	in.httpIdleTimeout = 100 * time.Millisecond
	br, send := filteredConn(t, in)
	send("GET /ok HTTP/1.1\r\nHost: p\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("%v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	wantClosed(t, br) // within connect's 10 s deadline, long after the idle limit
}

func TestSlowRequestHeadIsAnswered408(t *testing.T) {
	in, _ := newTestIncoming(t)
	in.httpHeadTimeout = 100 * time.Millisecond
	br, send := filteredConn(t, in)
	send("GET /slow HTTP/1.1\r\nHost: p\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 408 {
		t.Fatalf("answer to a head that never ends: %v, %v; want 408", res, err)
	}
	io.Copy(io.Discard, res.Body)
	wantClosed(t, br)
}
