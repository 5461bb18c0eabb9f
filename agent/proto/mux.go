package proto

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/trafficpolice/trafficpolice/agent/mux"
)

// Tuning of the yamux session, the same on both ends.
const (
	// StreamWindow is the most a stream may have in flight unacknowledged.
	// yamux's 256 KiB default caps one flow at window/RTT; 8 MiB keeps a
	// bulk transfer going over a port-forward with tens of ms of latency.
	StreamWindow = 8 << 20
	// KeepAliveInterval is how often each end pings the other, so a tunnel
	// whose peer vanished without a FIN is noticed.
	KeepAliveInterval = 5 * time.Second
	// ConnectionWriteTimeout bounds one frame's write and a ping's answer.
	ConnectionWriteTimeout = 10 * time.Second
	// AcceptBacklog bounds the streams opened by the peer and not yet
	// accepted.
	AcceptBacklog = 1024
)

// MuxConfig returns the yamux configuration both ends use. yamux's own
// messages go to logger at debug level.
func MuxConfig(logger *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = AcceptBacklog
	c.EnableKeepAlive = true
	c.KeepAliveInterval = KeepAliveInterval
	c.ConnectionWriteTimeout = ConnectionWriteTimeout
	c.MaxStreamWindowSize = StreamWindow
	// Half-closed TCP flows may legitimately stay half-closed for long
	// (a client that sent its request and waits for a long download);
	// full closes are signalled with Abort instead of yamux's timer.
	c.StreamCloseTimeout = 0
	c.LogOutput = nil
	c.Logger = muxLogger{logger}
	return c
}

// muxLogger adapts yamux's Printf-style logger to slog.
type muxLogger struct{ l *slog.Logger }

func (m muxLogger) Print(v ...any) { m.log(fmt.Sprint(v...)) }
func (m muxLogger) Printf(format string, v ...any) {
	m.log(fmt.Sprintf(format, v...))
}
func (m muxLogger) Println(v ...any) { m.log(fmt.Sprintln(v...)) }

func (m muxLogger) log(s string) {
	if m.l != nil {
		m.l.Log(context.Background(), slog.LevelDebug, strings.TrimSpace(s), "component", "yamux")
	}
}

// sessionConfig is the agent/mux configuration both ends use: the same
// windows, backlog and keepalive as MuxConfig gives yamux, so either end
// may still be yamux.
func sessionConfig(logger *slog.Logger) mux.Config {
	return mux.Config{
		AcceptBacklog:     AcceptBacklog,
		StreamWindow:      StreamWindow,
		KeepAliveInterval: KeepAliveInterval,
		PingTimeout:       ConnectionWriteTimeout,
		Logger:            logger,
	}
}

// ClientSession runs the client end of the tunnel over conn, after the
// handshake. Both ends switch implementation here, together.
func ClientSession(conn net.Conn, logger *slog.Logger) (*mux.Session, error) {
	return mux.Client(conn, sessionConfig(logger))
}

// ServerSession runs the agent's end of the tunnel over conn.
func ServerSession(conn net.Conn, logger *slog.Logger) (*mux.Session, error) {
	return mux.Server(conn, sessionConfig(logger))
}
