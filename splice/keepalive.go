package splice

import (
	"net"
	"time"
)

// KeepAliveDelay is how long a flow lives before KeepAliveLater turns on
// keepalive for its socket.
const KeepAliveDelay = time.Second

// KeepAliveLater turns TCP keepalive on for c (Go's defaults: 15 s idle,
// 15 s apart, 9 probes) once after has passed, so that a flow that lasts
// ends when its peer dies silently. Go's dialer sets it at once, four
// system calls that short connections (a test suite's) never need: dial
// with KeepAlive -1 and call this. Stop the timer when the flow ends.
func KeepAliveLater(c *net.TCPConn, after time.Duration) *time.Timer {
	return time.AfterFunc(after, func() {
		_ = c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true}) // fails only once closed
	})
}
