package mux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes a session. The zero value of a field takes its default.
type Config struct {
	// AcceptBacklog bounds the streams the peer opened that wait for
	// AcceptStream (more are reset), and the streams this end opened that
	// the peer has not acknowledged yet (OpenStream blocks). Default 256.
	AcceptBacklog int
	// MaxStreams bounds the streams open at once; a peer opening more
	// gets them reset. Default 65536.
	MaxStreams int
	// StreamWindow is the receive window advertised per stream: the most
	// a stream buffers unread. At least 256 KiB (yamux's initial window),
	// which is the default.
	StreamWindow uint32
	// KeepAliveInterval is how often to ping the peer; zero disables it.
	KeepAliveInterval time.Duration
	// PingTimeout bounds the wait for a ping's answer. Default 10s.
	PingTimeout time.Duration
	// Logger gets the session's debug messages; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.AcceptBacklog == 0 {
		c.AcceptBacklog = 256
	}
	if c.AcceptBacklog < 0 {
		return c, fmt.Errorf("mux config: AcceptBacklog %d: must be positive", c.AcceptBacklog)
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = 1 << 16
	}
	if c.MaxStreams < 0 {
		return c, fmt.Errorf("mux config: MaxStreams %d: must be positive", c.MaxStreams)
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = initialWindow
	}
	if c.StreamWindow < initialWindow {
		return c, fmt.Errorf("mux config: StreamWindow %d: must be at least %d (the protocol's initial window)", c.StreamWindow, initialWindow)
	}
	if c.KeepAliveInterval < 0 {
		return c, fmt.Errorf("mux config: KeepAliveInterval %v: must be zero (off) or positive", c.KeepAliveInterval)
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = 10 * time.Second
	}
	if c.PingTimeout < 0 {
		return c, fmt.Errorf("mux config: PingTimeout %v: must be positive", c.PingTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// controlQueue bounds the frames the receive loop queues for the control
// writer (ping answers, resets of refused streams).
const controlQueue = 64

// readBufferSize is the receive loop's read buffer.
const readBufferSize = 128 << 10

// Session is one multiplexed connection.
type Session struct {
	conn   net.Conn
	cfg    Config
	client bool
	w      *connWriter

	mu      sync.Mutex
	streams map[uint32]*Stream
	nextID  uint32 // the next id this end opens

	acceptCh chan *Stream
	synSem   chan struct{} // one token per stream opened and not yet acknowledged
	ctrlCh   chan [headerSize]byte

	remoteGoAway atomic.Bool

	pingMu sync.Mutex
	pingID uint32
	pings  map[uint32]chan struct{}

	closeOnce sync.Once
	closeCh   chan struct{}
	closeErr  error // why; set before closeCh closes
	recvDone  chan struct{}
}

// Client runs the client end of a session over conn (it opens odd stream ids).
func Client(conn net.Conn, cfg Config) (*Session, error) { return newSession(conn, cfg, true) }

// Server runs the server end of a session over conn (it opens even stream ids).
func Server(conn net.Conn, cfg Config) (*Session, error) { return newSession(conn, cfg, false) }

func newSession(conn net.Conn, cfg Config, client bool) (*Session, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Session{
		conn:     conn,
		cfg:      cfg,
		client:   client,
		streams:  make(map[uint32]*Stream),
		nextID:   2,
		acceptCh: make(chan *Stream, cfg.AcceptBacklog),
		synSem:   make(chan struct{}, cfg.AcceptBacklog),
		ctrlCh:   make(chan [headerSize]byte, controlQueue),
		pings:    make(map[uint32]chan struct{}),
		closeCh:  make(chan struct{}),
		recvDone: make(chan struct{}),
	}
	if client {
		s.nextID = 1
	}
	s.w = newConnWriter(conn, func(err error) {
		s.shutdown(fmt.Errorf("write queued frames: %w", err))
	})
	go s.recvLoop()
	go s.controlLoop()
	if cfg.KeepAliveInterval > 0 {
		go s.keepalive()
	}
	return s, nil
}

// IsClosed reports whether the session has ended.
func (s *Session) IsClosed() bool { return isClosed(s.closeCh) }

// CloseChan is closed when the session ends.
func (s *Session) CloseChan() <-chan struct{} { return s.closeCh }

// Err is why the session ended (ErrSessionShutdown after Close), or nil
// while it runs.
func (s *Session) Err() error {
	if !s.IsClosed() {
		return nil
	}
	return s.closeErr
}

// NumStreams is the number of streams open.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// LocalAddr is the connection's local address.
func (s *Session) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr is the connection's remote address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Close ends the session: the connection is closed and every blocked
// call returns.
func (s *Session) Close() error {
	s.shutdown(ErrSessionShutdown)
	<-s.recvDone
	return nil
}

// shutdown ends the session with err; it does not wait for the receive
// loop, so the receive loop may call it.
func (s *Session) shutdown(err error) {
	s.closeOnce.Do(func() {
		s.closeErr = err
		close(s.closeCh)
		s.w.fail(ErrSessionShutdown)
		_ = s.conn.Close()
		// Readers parked in OnReadable learn of the end here.
		s.mu.Lock()
		streams := make([]*Stream, 0, len(s.streams))
		for _, st := range s.streams {
			streams = append(streams, st)
		}
		s.mu.Unlock()
		for _, st := range streams {
			st.readable()
		}
		if !errors.Is(err, ErrSessionShutdown) {
			s.cfg.Logger.Debug("mux session ended", "error", err)
		}
	})
}

// Open is OpenStream as a net.Conn.
func (s *Session) Open() (net.Conn, error) {
	st, err := s.OpenStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

// OpenStream opens a stream. It blocks while AcceptBacklog streams wait
// for the peer's acknowledgement.
func (s *Session) OpenStream() (*Stream, error) {
	if s.IsClosed() {
		return nil, ErrSessionShutdown
	}
	if s.remoteGoAway.Load() {
		return nil, ErrRemoteGoAway
	}
	select {
	case s.synSem <- struct{}{}:
	case <-s.closeCh:
		return nil, ErrSessionShutdown
	}
	s.mu.Lock()
	id := s.nextID
	if id >= math.MaxUint32-1 {
		s.mu.Unlock()
		<-s.synSem
		return nil, ErrStreamsExhausted
	}
	s.nextID += 2
	st := newStream(s, id)
	st.holdsSyn = true
	s.streams[id] = st
	s.mu.Unlock()
	if err := st.sendWindowUpdate(flagSYN); err != nil {
		st.mu.Lock()
		st.reset = true
		st.mu.Unlock()
		st.forget()
		return nil, err
	}
	return st, nil
}

// Accept is AcceptStream as a net.Conn.
func (s *Session) Accept() (net.Conn, error) {
	st, err := s.AcceptStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

// AcceptStream waits for a stream the peer opened.
func (s *Session) AcceptStream() (*Stream, error) {
	return s.AcceptStreamWithContext(context.Background())
}

// AcceptStreamWithContext waits for a stream the peer opened, or ctx.
func (s *Session) AcceptStreamWithContext(ctx context.Context) (*Stream, error) {
	select {
	case st := <-s.acceptCh:
		if err := st.sendWindowUpdate(flagACK); err != nil {
			return nil, err
		}
		return st, nil
	case <-s.closeCh:
		return nil, ErrSessionShutdown
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Ping sends a ping and returns the time to its answer.
func (s *Session) Ping() (time.Duration, error) {
	ch := make(chan struct{})
	s.pingMu.Lock()
	id := s.pingID
	s.pingID++
	s.pings[id] = ch
	s.pingMu.Unlock()
	defer func() {
		s.pingMu.Lock()
		delete(s.pings, id)
		s.pingMu.Unlock()
	}()
	start := time.Now()
	timer := time.NewTimer(s.cfg.PingTimeout)
	defer timer.Stop()
	// Through the control queue, so a stuck connection cannot hold the
	// ping past its timeout.
	select {
	case s.ctrlCh <- header{typ: typePing, flags: flagSYN, length: id}.encode():
	case <-s.closeCh:
		return 0, ErrSessionShutdown
	case <-timer.C:
		return 0, ErrTimeout
	}
	select {
	case <-ch:
		return time.Since(start), nil
	case <-s.closeCh:
		return 0, ErrSessionShutdown
	case <-timer.C:
		return 0, ErrTimeout
	}
}

func (s *Session) keepalive() {
	t := time.NewTicker(s.cfg.KeepAliveInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if _, err := s.Ping(); err != nil {
				if !errors.Is(err, ErrSessionShutdown) {
					s.shutdown(fmt.Errorf("%w: %w", ErrKeepAliveTimeout, err))
				}
				return
			}
		case <-s.closeCh:
			return
		}
	}
}

// controlLoop writes the frames the receive loop must not block on.
func (s *Session) controlLoop() {
	for {
		select {
		case hdr := <-s.ctrlCh:
			if err := s.w.write(hdr, nil); err != nil {
				s.shutdown(fmt.Errorf("write control frame: %w", err))
				return
			}
		case <-s.closeCh:
			return
		}
	}
}

// queueControl queues a frame for the control writer without blocking;
// it reports false when the queue is full.
func (s *Session) queueControl(h header) bool {
	select {
	case s.ctrlCh <- h.encode():
		return true
	default:
		return false
	}
}

// writeFrame writes one frame from the caller's goroutine.
func (s *Session) writeFrame(h header, body []byte) error {
	if err := s.w.write(h.encode(), body); err != nil {
		if s.IsClosed() {
			return ErrSessionShutdown
		}
		s.shutdown(fmt.Errorf("write frame: %w", err))
		return ErrSessionShutdown
	}
	return nil
}

func (s *Session) recvLoop() {
	defer close(s.recvDone)
	br := bufio.NewReaderSize(s.conn, readBufferSize)
	err := s.recvFrames(br)
	if errors.Is(err, ErrProtocol) {
		// Best effort: tell the peer why, within a bounded time.
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = s.w.write(header{typ: typeGoAway, length: goAwayProtocol}.encode(), nil)
	}
	s.shutdown(err)
}

func (s *Session) recvFrames(br *bufio.Reader) error {
	var hb [headerSize]byte
	for {
		if _, err := io.ReadFull(br, hb[:]); err != nil {
			if errors.Is(err, io.EOF) || s.IsClosed() {
				return ErrSessionShutdown
			}
			return fmt.Errorf("read frame header: %w", err)
		}
		h, err := parseHeader(hb)
		if err != nil {
			return err
		}
		switch h.typ {
		case typeData, typeWindowUpdate:
			err = s.handleStreamFrame(h, br)
		case typePing:
			err = s.handlePing(h)
		case typeGoAway:
			err = s.handleGoAway(h)
		}
		if err != nil {
			return err
		}
	}
}

func (s *Session) handlePing(h header) error {
	if h.streamID != 0 {
		return fmt.Errorf("%w: ping on stream %d, must be 0", ErrProtocol, h.streamID)
	}
	if h.flags&flagSYN != 0 {
		// A peer that pings faster than we answer loses answers, not memory.
		s.queueControl(header{typ: typePing, flags: flagACK, length: h.length})
		return nil
	}
	s.pingMu.Lock()
	if ch := s.pings[h.length]; ch != nil {
		delete(s.pings, h.length)
		close(ch)
	}
	s.pingMu.Unlock()
	return nil
}

func (s *Session) handleGoAway(h header) error {
	switch h.length {
	case goAwayNormal:
		s.remoteGoAway.Store(true)
		return nil
	case goAwayProtocol:
		return fmt.Errorf("%w: peer reported a protocol error", ErrSessionShutdown)
	case goAwayInternal:
		return fmt.Errorf("%w: peer reported an internal error", ErrSessionShutdown)
	}
	return fmt.Errorf("%w: go-away code %d, valid are 0-2", ErrProtocol, h.length)
}

// handleStreamFrame handles a data or window-update frame; for data, the
// body follows in br.
func (s *Session) handleStreamFrame(h header, br *bufio.Reader) error {
	body := 0
	if h.typ == typeData {
		body = int(h.length)
	}
	st, err := s.streamFor(h)
	if err != nil {
		return err
	}
	if st == nil {
		// A stream we reset or refused, or one already closed both ways:
		// its late frames are dropped.
		_, err := br.Discard(body)
		return err
	}
	return st.receive(h, br)
}

// streamFor returns the frame's stream, creating it for a SYN; nil for a
// frame to drop.
func (s *Session) streamFor(h header) (*Stream, error) {
	id := h.streamID
	if h.flags&flagSYN == 0 {
		s.mu.Lock()
		st := s.streams[id]
		s.mu.Unlock()
		return st, nil
	}
	if id == 0 {
		return nil, fmt.Errorf("%w: peer opened stream 0, reserved for the session", ErrProtocol)
	}
	if (id%2 == 0) != s.client {
		// The client opens odd ids, the server even ones.
		return nil, fmt.Errorf("%w: peer opened stream %d, an id of this end's parity", ErrProtocol, id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Ids need not arrive in order: concurrent opens race to the wire.
	if s.streams[id] != nil {
		return nil, fmt.Errorf("%w: peer opened stream %d, which is open", ErrProtocol, id)
	}
	if len(s.streams) >= s.cfg.MaxStreams {
		return nil, s.refuse(id, "too many streams")
	}
	st := newStream(s, id)
	select {
	case s.acceptCh <- st:
	default:
		return nil, s.refuse(id, "accept backlog full")
	}
	s.streams[id] = st
	return st, nil
}

// refuse resets a stream the peer opened; it fails only if even the
// reset cannot be queued, a peer that opens streams without reading.
func (s *Session) refuse(id uint32, why string) error {
	s.cfg.Logger.Debug("mux refused stream", "stream", id, "reason", why)
	if !s.queueControl(header{typ: typeWindowUpdate, flags: flagRST, streamID: id}) {
		return fmt.Errorf("%w: peer opens streams faster than their resets can be sent (%s)", ErrProtocol, why)
	}
	return nil
}

// remove forgets a stream closed both ways or reset.
func (s *Session) remove(id uint32) {
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
}
