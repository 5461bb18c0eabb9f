package router

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// FlowRecord is one line of the flow log (ARCHITECTURE §4.4), written when
// the flow ends.
type FlowRecord struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Proto    string    `json:"proto"`
	Src      string    `json:"src"`
	Dst      string    `json:"dst"`
	Host     string    `json:"host,omitempty"`
	Route    string    `json:"route"`
	Rule     string    `json:"rule"`
	BytesOut int64     `json:"bytes_out"`
	BytesIn  int64     `json:"bytes_in"`
	Error    string    `json:"error,omitempty"`
	// Via is "kernel" for a flow of the kernel path (whose bytes count IP
	// packets, headers included), "kernel-socket" for a flow the router
	// carried from the app's kernel socket (KernelSockets); absent for the
	// router's own through the netstack.
	Via string `json:"via,omitempty"`
}

// ViaKernelSocket is FlowRecord.Via for a flow taken as a kernel socket.
const ViaKernelSocket = "kernel-socket"

const (
	// flowLogQueue is how many records may wait for the writer. Records
	// are written off the packet loop (a blocked UDP datagram's record is
	// made on it), so a slow or stuck writer costs lines, never traffic.
	flowLogQueue = 4096
	// flowLogFlushTimeout bounds how long Close waits for the writer to
	// take the records still queued.
	flowLogFlushTimeout = 5 * time.Second
)

// flowLog serialises records as JSON lines on its own goroutine; write
// never blocks. What could not be written is counted, with the first
// reason, for err.
type flowLog struct {
	w     io.Writer
	queue chan FlowRecord
	done  chan struct{}

	mu       sync.Mutex
	closed   bool
	gaveUp   bool  // close stopped waiting: the rest is counted lost
	records  int64 // handed to write
	lost     int64 // not written, for whatever reason
	firstErr error
}

func newFlowLog(w io.Writer) *flowLog {
	if w == nil {
		return nil
	}
	l := &flowLog{w: w, queue: make(chan FlowRecord, flowLogQueue), done: make(chan struct{})}
	go l.drain()
	return l
}

func (l *flowLog) write(r *FlowRecord) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return // a flow cut by the router's own teardown, after the log's end
	}
	l.records++
	select {
	case l.queue <- *r:
	default:
		l.lostLocked(1, fmt.Errorf("the writer fell behind: %d records were waiting", flowLogQueue))
	}
}

func (l *flowLog) lostLocked(n int64, why error) {
	l.lost += n
	if l.firstErr == nil {
		l.firstErr = why
	}
}

func (l *flowLog) drain() {
	defer close(l.done)
	enc := json.NewEncoder(l.w)
	for r := range l.queue {
		l.mu.Lock()
		gaveUp := l.gaveUp
		l.mu.Unlock()
		if gaveUp {
			continue
		}
		if err := enc.Encode(&r); err != nil {
			l.mu.Lock()
			l.lostLocked(1, err)
			l.mu.Unlock()
		}
	}
}

// close writes what is queued, waiting at most flowLogFlushTimeout for a
// stuck writer (which is then woken with a deadline, if it has one).
func (l *flowLog) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.queue)
	l.mu.Unlock()
	select {
	case <-l.done:
		return
	case <-time.After(flowLogFlushTimeout):
	}
	l.mu.Lock()
	l.gaveUp = true
	l.lostLocked(int64(len(l.queue)), fmt.Errorf("the writer took nothing for %s", flowLogFlushTimeout))
	l.mu.Unlock()
	if d, ok := l.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Now())
	}
	// Drained by the goroutine if the deadline woke it; never written
	// otherwise, and already counted.
}

// err says how many records are missing and why; nil if none is.
func (l *flowLog) err() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == 0 {
		return nil
	}
	return fmt.Errorf("flow log: %d of %d records were not written: %w", l.lost, l.records, l.firstErr)
}
