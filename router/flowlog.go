package router

import (
	"encoding/json"
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
}

// flowLog serialises records as JSON lines.
type flowLog struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newFlowLog(w io.Writer) *flowLog {
	if w == nil {
		return nil
	}
	return &flowLog{enc: json.NewEncoder(w)}
}

func (l *flowLog) write(r *FlowRecord) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.enc.Encode(r) // a full disk must not break the app's traffic
}
