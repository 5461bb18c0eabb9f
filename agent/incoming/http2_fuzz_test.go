package incoming

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

// FuzzHTTP2Detection feeds arbitrary first bytes of a connection to what
// tells HTTP/2 on a filtered port: the preface check must say yes exactly
// for the preface, read nothing past it (the HTTP/2 server reads it
// again), and fail only on input cut short inside it; a request head
// taken as an h2c upgrade must carry exactly one HTTP2-Settings whose
// value decodes to the settings returned.
func FuzzHTTP2Detection(f *testing.F) {
	for _, s := range []string{
		http2.ClientPreface,
		http2.ClientPreface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n",
		"PRI * HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: p\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
		"GET / HTTP/1.1\r\nConnection: upgrade,http2-settings\r\nUpgrade: websocket, h2c\r\nHTTP2-Settings: \r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		br := bufio.NewReaderSize(r, 16<<10)
		h2, err := peekH2Preface(br)
		if consumed(data, r, br) != 0 {
			t.Fatalf("the preface check consumed %d bytes", consumed(data, r, br))
		}
		isPreface := bytes.HasPrefix(data, []byte(http2.ClientPreface))
		switch {
		case err != nil:
			if !errors.Is(err, io.EOF) || !strings.HasPrefix(http2.ClientPreface, string(data)) {
				t.Fatalf("error %v for %q, which is not the preface cut short", err, data)
			}
		case h2 != isPreface:
			t.Fatalf("peekH2Preface(%q) = %v", data, h2)
		}

		head, _, err := readRequestHead(bufio.NewReaderSize(bytes.NewReader(data), 16<<10))
		if err != nil {
			return
		}
		settings, ok := h2cUpgrade(head)
		if !ok {
			return
		}
		var values []string
		for _, l := range head.headers {
			if strings.EqualFold(l.name, "http2-settings") {
				values = append(values, l.value)
			}
		}
		if head.version != "HTTP/1.1" || len(values) != 1 || len(settings)%6 != 0 {
			t.Fatalf("taken as an h2c upgrade: version %q, HTTP2-Settings %q, %d bytes of settings", head.version, values, len(settings))
		}
		if got := base64.RawURLEncoding.EncodeToString(settings); got != strings.TrimRight(values[0], "=") {
			t.Fatalf("HTTP2-Settings %q decoded to settings that encode as %q", values[0], got)
		}
	})
}
