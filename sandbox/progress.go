package sandbox

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Progress prints the run's few step lines on stderr: an animated spinner
// on a terminal, plain "✓ step" lines otherwise (CI logs).
type Progress struct {
	w    io.Writer
	tty  bool
	mu   sync.Mutex
	quit bool
}

// NewProgress writes to w; animation only when w is a terminal.
func NewProgress(w io.Writer) *Progress {
	p := &Progress{w: w}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

// Quiet silences the progress lines (errors still reach the caller).
func (p *Progress) Quiet() { p.quit = true }

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// Step shows a step in progress; call the returned function when it ends.
func (p *Progress) Step(msg string) func(err error) {
	if p == nil || p.quit {
		return func(error) {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if p.tty {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(80 * time.Millisecond)
			defer t.Stop()
			for i := 0; ; i++ {
				p.mu.Lock()
				fmt.Fprintf(p.w, "\r%s %s", spinner[i%len(spinner)], msg)
				p.mu.Unlock()
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
	}
	return func(err error) {
		close(stop)
		wg.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		prefix := ""
		if p.tty {
			prefix = "\r\033[K"
		}
		if err != nil {
			fmt.Fprintf(p.w, "%s✗ %s: %v\n", prefix, msg, err)
			return
		}
		fmt.Fprintf(p.w, "%s✓ %s\n", prefix, msg)
	}
}

// Note prints one line that is not a step.
func (p *Progress) Note(format string, args ...any) {
	if p == nil || p.quit {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "  "+format+"\n", args...)
}
