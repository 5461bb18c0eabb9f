package serve

import (
	"fmt"
	"io"
	"sync"
)

// Logger writes lines like the seed's: "[DEBUG messages_db] store; ...".
type Logger struct {
	mu   sync.Mutex
	w    io.Writer
	name string
}

// NewLogger returns a logger that tags its lines with name (the app's name,
// in snake case as the seed prints it).
func NewLogger(w io.Writer, name string) *Logger {
	return &Logger{w: w, name: name}
}

// Debugf logs what the app does with each message.
func (l *Logger) Debugf(format string, args ...any) { l.logf("DEBUG", l.name, format, args...) }

// Infof logs the app's life: listening, stopping.
func (l *Logger) Infof(format string, args ...any) { l.logf("INFO ", l.name, format, args...) }

// Errorf logs a failure the app answered with an error status.
func (l *Logger) Errorf(format string, args ...any) { l.logf("ERROR", l.name, format, args...) }

// accessf logs one request line, tagged "http" as actix's logger is in the seed.
func (l *Logger) accessf(format string, args ...any) { l.logf("INFO ", "http", format, args...) }

func (l *Logger) logf(level, tag, format string, args ...any) {
	line := fmt.Sprintf("[%s %s] %s\n", level, tag, fmt.Sprintf(format, args...))
	l.mu.Lock()
	defer l.mu.Unlock()
	// A log line that cannot be written has nowhere better to go.
	_, _ = io.WriteString(l.w, line)
}
