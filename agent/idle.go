package agent

import (
	"net"
	"sync"
	"time"
)

// ExitWhenIdle wraps ln so that onIdle is called, once, when no client
// connection has been open for idle: counted from now, and again from
// each moment the last client leaves. An agent started for one run
// (through Kubernetes) uses it to end when its client is gone.
func ExitWhenIdle(ln net.Listener, idle time.Duration, onIdle func()) net.Listener {
	w := &idleListener{Listener: ln, idle: idle}
	w.timer = time.AfterFunc(idle, func() {
		w.mu.Lock()
		fire := w.open == 0 && !w.fired
		w.fired = w.fired || fire
		w.mu.Unlock()
		if fire {
			onIdle()
		}
	})
	return w
}

type idleListener struct {
	net.Listener
	idle  time.Duration
	timer *time.Timer

	mu    sync.Mutex
	open  int
	fired bool
}

func (l *idleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.open++
	l.timer.Stop()
	l.mu.Unlock()
	return &idleConn{Conn: c, l: l}, nil
}

type idleConn struct {
	net.Conn
	l    *idleListener
	once sync.Once
}

func (c *idleConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		if c.l.open == 0 {
			c.l.timer.Reset(c.l.idle)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
