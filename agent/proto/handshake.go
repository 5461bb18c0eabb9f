package proto

import (
	"errors"
	"fmt"
	"io"
)

// MaxHelloSize bounds a Hello's body: a version and a token. It is all the
// agent reads from a peer before the token is checked.
const MaxHelloSize = 4 << 10

// ErrYamuxFirst means the peer started a yamux session instead of sending
// Hello: a client of protocol version 2 or older.
var ErrYamuxFirst = errors.New("the client started the tunnel's yamux session before its Hello, as clients of protocol version 2 and older do: upgrade trafficpolice on that side")

// ReadHello reads the Hello that opens a connection. A frame of another
// type, or a body over MaxHelloSize, is an error before anything is
// allocated for it.
func ReadHello(r io.Reader) (Hello, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Hello{}, fmt.Errorf("read Hello header: %w", err)
	}
	if hdr[0] == 0 { // yamux's protocol version
		return Hello{}, ErrYamuxFirst
	}
	t, n, err := parseHeader(hdr[:])
	if err != nil {
		return Hello{}, err
	}
	if t != TypeHello {
		return Hello{}, fmt.Errorf("first message is %s, want Hello", t)
	}
	if n > MaxHelloSize {
		return Hello{}, fmt.Errorf("Hello body of %d bytes exceeds the maximum of %d", n, MaxHelloSize)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Hello{}, fmt.Errorf("read Hello body: %w", noEOF(err))
	}
	m, err := decodeBody(t, body)
	if err != nil {
		return Hello{}, err
	}
	return m.(Hello), nil
}
