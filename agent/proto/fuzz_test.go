package proto

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the frame decoder. It must never
// panic or read past the frame, and whatever it accepts must encode back to
// exactly the bytes it came from (the encoding is canonical).
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := Append(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, n, err := Decode(data)
		streamed, rerr := ReadMessage(bytes.NewReader(data))
		if err != nil {
			if rerr == nil {
				t.Fatalf("Decode failed (%v) but ReadMessage accepted %#v", err, streamed)
			}
			return
		}
		if rerr != nil {
			t.Fatalf("Decode accepted %#v but ReadMessage failed: %v", m, rerr)
		}
		if !reflect.DeepEqual(m, streamed) {
			t.Fatalf("Decode and ReadMessage disagree:\n%#v\n%#v", m, streamed)
		}
		if n < HeaderSize || n > len(data) {
			t.Fatalf("Decode took %d bytes of %d", n, len(data))
		}
		again, err := Append(nil, m)
		if err != nil {
			t.Fatalf("re-encoding %#v: %v", m, err)
		}
		if !bytes.Equal(again, data[:n]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", again, data[:n])
		}
	})
}
