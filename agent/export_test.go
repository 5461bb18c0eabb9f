package agent

import "time"

// SetKeepAliveAfter sets keepAliveAfter until restore is called.
func SetKeepAliveAfter(d time.Duration) (restore func()) {
	old := keepAliveAfter
	keepAliveAfter = d
	return func() { keepAliveAfter = old }
}
