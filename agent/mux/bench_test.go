package mux_test

import (
	"io"
	"testing"
)

// benchImpls runs f per implementation (same one on both ends) over a
// loopback TCP pair. Run: go test -run '^$' -bench . ./agent/mux
func benchImpls(b *testing.B, f func(b *testing.B, client, server session)) {
	for _, im := range []impl{ours, theirs} {
		b.Run(im.name, func(b *testing.B) {
			x, y := tcpPair(b)
			client := im.client(x, 1024)
			server := im.server(y, 1024)
			defer func() {
				client.Close()
				server.Close()
			}()
			f(b, client, server)
		})
	}
}

// BenchmarkRoundTrip1B: one byte there and back on one stream.
func BenchmarkRoundTrip1B(b *testing.B) {
	benchImpls(b, func(b *testing.B, client, server session) {
		go echoServer(server)
		c, err := client.Open()
		if err != nil {
			b.Fatal(err)
		}
		buf := []byte{1}
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBulk: one stream, 64 KiB writes, to a reader that discards.
func BenchmarkBulk(b *testing.B) {
	benchImpls(b, func(b *testing.B, client, server session) {
		done := make(chan error, 1)
		go func() {
			c, err := server.Accept()
			if err != nil {
				done <- err
				return
			}
			_, err = io.Copy(io.Discard, c)
			done <- err
		}()
		c, err := client.Open()
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		b.SetBytes(int64(len(buf)))
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkOpenClose: open a stream, send a byte, half-close, and read
// the peer's close: a short connection's life.
func BenchmarkOpenClose(b *testing.B) {
	benchImpls(b, func(b *testing.B, client, server session) {
		go func() {
			for {
				c, err := server.Accept()
				if err != nil {
					return
				}
				go func() {
					_, _ = io.Copy(io.Discard, c)
					_ = c.Close()
				}()
			}
		}()
		buf := make([]byte, 1)
		b.ResetTimer()
		for range b.N {
			c, err := client.Open()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
			c.Close()
			if _, err := c.Read(buf); err != io.EOF {
				b.Fatalf("read after the peer's close: %v", err)
			}
		}
	})
}

// BenchmarkParallelRoundTrip: 1 B round trips on many streams at once.
func BenchmarkParallelRoundTrip(b *testing.B) {
	benchImpls(b, func(b *testing.B, client, server session) {
		go echoServer(server)
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			c, err := client.Open()
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			buf := []byte{1}
			for pb.Next() {
				if _, err := c.Write(buf); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkRoundTrip1BKernel is the floor: 1 B there and back on a plain
// loopback TCP connection, no multiplexing.
func BenchmarkRoundTrip1BKernel(b *testing.B) {
	x, y := tcpPair(b)
	defer x.Close()
	defer y.Close()
	go func() { _, _ = io.Copy(y, y) }()
	buf := []byte{1}
	b.ResetTimer()
	for range b.N {
		if _, err := x.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(x, buf); err != nil {
			b.Fatal(err)
		}
	}
}
