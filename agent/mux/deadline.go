package mux

import (
	"sync"
	"time"
)

// deadline is a settable point in time whose channel is closed when it
// passes, so that a blocked Read or Write can select on it.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	passed chan struct{} // closed once the deadline has passed
	onPass func()        // if set, called (unlocked) when it passes
}

func newDeadline() deadline { return deadline{passed: make(chan struct{})} }

// set moves the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	if d.setLocked(t) && d.onPass != nil {
		d.onPass()
	}
}

// setLocked is set under d.mu; it reports whether the deadline passed
// now, so that set tells onPass outside the lock.
func (d *deadline) setLocked(t time.Time) (passedNow bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.passed // the timer fired: wait for it to close the channel
	}
	d.timer = nil
	closed := isClosed(d.passed)
	if t.IsZero() {
		if closed {
			d.passed = make(chan struct{})
		}
		return false
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !closed {
			close(d.passed)
		}
		return !closed
	}
	if closed {
		d.passed = make(chan struct{})
	}
	ch, onPass := d.passed, d.onPass
	d.timer = time.AfterFunc(dur, func() {
		close(ch)
		if onPass != nil {
			onPass()
		}
	})
	return false
}

// wait returns a channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passed
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
