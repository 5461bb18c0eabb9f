package launch

import (
	"maps"
	"testing"
)

// TestPortBitmapRoundTrip: the holder's listening ports come back as they
// went, the lowest and highest included, and a short bitmap (a peer that
// sent less) reads as the ports it has.
func TestPortBitmapRoundTrip(t *testing.T) {
	for _, ports := range []map[uint16]bool{{}, {1: true}, {0: true, 80: true, 443: true, 65535: true}} {
		if got := portsFromBitmap(portBitmap(ports)); !maps.Equal(got, ports) {
			t.Errorf("ports %v came back as %v", ports, got)
		}
	}
	if got := portsFromBitmap([]byte{0x02}); !maps.Equal(got, map[uint16]bool{1: true}) {
		t.Errorf("a one-byte bitmap with bit 1 reads as %v", got)
	}
	if n := len(portBitmap(map[uint16]bool{65535: true})); n != 8192 {
		t.Errorf("bitmap of %d bytes, want 8192", n)
	}
}
