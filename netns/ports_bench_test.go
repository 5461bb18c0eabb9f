package netns

import "testing"

// BenchmarkListeningPorts: the two ways of reading the listeners of this
// process's namespace (the poll of a run's listenerWatch, every 250 ms).
func BenchmarkListeningPorts(b *testing.B) {
	b.Run("sock_diag", func(b *testing.B) {
		for b.Loop() {
			if err := diagListeningPorts(map[uint16]bool{}, map[uint16]bool{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proc-tables", func(b *testing.B) {
		for b.Loop() {
			if err := readProcNet("/proc/self/net/", map[uint16]bool{}, map[uint16]bool{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
