package serve

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"unicode/utf8"
)

// MaxBody is the largest request body the sample apps accept.
const MaxBody = 1 << 20

// ReadText reads a request body that must be UTF-8 text of at most MaxBody
// bytes. On failure it has already answered the client (413 or 400) and
// returns false.
func ReadText(w http.ResponseWriter, r *http.Request) (string, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("body is larger than %d bytes", MaxBody), http.StatusRequestEntityTooLarge)
			return "", false
		}
		http.Error(w, fmt.Sprintf("read body: %v", err), http.StatusBadRequest)
		return "", false
	}
	if !utf8.Valid(body) {
		http.Error(w, "body must be UTF-8 text", http.StatusBadRequest)
		return "", false
	}
	return string(body), true
}
