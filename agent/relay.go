package agent

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/hashicorp/yamux"
)

// halfCloser is a connection whose sending half can be closed alone: a
// TCP socket (CloseWrite) or a yamux stream (whose Close is a FIN: reads
// go on until the other end closes).
type halfCloser interface {
	io.ReadWriter
	closeWrite() error
	close() error
	abort()
}

type tcpSide struct{ *net.TCPConn }

func (c tcpSide) closeWrite() error { return c.CloseWrite() }
func (c tcpSide) close() error      { return c.Close() }

// abort resets the connection instead of closing it cleanly: the peer
// must not take a broken exchange for a complete one.
func (c tcpSide) abort() {
	_ = c.SetLinger(0)
	_ = c.Close()
}

type streamSide struct{ *yamux.Stream }

func (s streamSide) closeWrite() error { return s.Close() }
func (s streamSide) close() error      { return s.Close() }
func (s streamSide) abort()            { _ = s.Close() }

// relay copies a→b (reading from ar, which is a's reader or one that
// starts with bytes already read from a) and b→a until both directions end,
// passing half-closes on. An error in either direction resets both.
func relay(a halfCloser, ar io.Reader, b halfCloser) {
	var once sync.Once
	broken := func() {
		once.Do(func() {
			a.abort()
			b.abort()
		})
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := copyHalf(b, ar); err != nil {
			broken()
		}
	}()
	if err := copyHalf(a, b); err != nil {
		broken()
	}
	wg.Wait()
	_ = a.close()
	_ = b.close()
}

// copyHalf copies src to dst until src's EOF, then closes dst's sending
// half. A read or write error is returned.
func copyHalf(dst halfCloser, src io.Reader) error {
	bp := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(bp)
	_, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	if err != nil {
		return err
	}
	if err := dst.closeWrite(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ENOTCONN) {
		return err
	}
	return nil
}

// onlyReader and onlyWriter hide ReadFrom/WriteTo, so that CopyBuffer uses
// the pooled buffer instead of allocating its own.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }
