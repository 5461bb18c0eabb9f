package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

var (
	// errDNSStreamEnded is wrapped by the error of every query on a DNS
	// stream that broke; such a query is asked again (on a stream of its
	// own, or on the next tunnel): DNS queries may be repeated.
	errDNSStreamEnded = errors.New("DNS stream to the agent ended")
	// errDNSStreamRefused: the agent predates DNSStream, or refused it.
	errDNSStreamRefused = errors.New("the agent does not resolve on a DNS stream")
)

// dnsStream is a tunnel's one stream for DNS (proto.DNSStream): each
// query goes out as a DNSQuery with an id of the stream's, and its
// DNSAnswer comes back whenever the agent has resolved it, in any order.
// A slot of the proto.MaxDNSInFlight is held from sending a query until
// its answer comes, also when its caller gave up first: the agent answers
// every query within its timeout, so the slot comes back, and the agent
// never has more queries than it agreed to read. This also keeps the
// queries in flight (at most 64 × 64 KiB) inside the stream's window, so
// a write never waits for the agent to read.
type dnsStream struct {
	rw    io.ReadWriteCloser
	slots chan struct{} // a token per query in flight
	wlock chan struct{} // one writer at a time; waited for with the caller's context

	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]chan proto.DNSAnswer // by id; each channel holds one answer
	err     error                           // why the stream ended, set before done closes
	done    chan struct{}
}

func newDNSStream(rw io.ReadWriteCloser) *dnsStream {
	return &dnsStream{
		rw:      rw,
		slots:   make(chan struct{}, proto.MaxDNSInFlight),
		wlock:   make(chan struct{}, 1),
		nextID:  1,
		pending: map[uint32]chan proto.DNSAnswer{},
		done:    make(chan struct{}),
	}
}

// openDNSStream asks the agent for a DNS stream on sess, waiting for its
// answer at most timeout. An agent that does not know DNSStream closes
// the stream without an answer; that, or a refusal, is
// errDNSStreamRefused.
func openDNSStream(sess *mux.Session, timeout time.Duration) (*dnsStream, error) {
	st, err := sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("open a DNS stream: %w", err)
	}
	_ = st.SetDeadline(time.Now().Add(timeout))
	err = proto.WriteMessage(st, proto.DNSStream{})
	var m proto.Message
	if err == nil {
		m, err = proto.ReadMessage(st)
	}
	if err != nil {
		_ = st.Close()
		// A session that ends ends its streams with io.EOF too, but
		// says it is closed first.
		if errors.Is(err, io.EOF) && !sess.IsClosed() {
			return nil, fmt.Errorf("%w: it closed the stream without an answer to DNSStream", errDNSStreamRefused)
		}
		return nil, fmt.Errorf("open a DNS stream: %w", err)
	}
	res, ok := m.(proto.Result)
	if !ok {
		_ = st.Close()
		return nil, fmt.Errorf("agent answered DNSStream with %s, want Result", m.Type())
	}
	if res.Class != proto.ClassOK {
		_ = st.Close()
		return nil, fmt.Errorf("%w: %s (%s)", errDNSStreamRefused, res.Message, res.Class)
	}
	_ = st.SetDeadline(time.Time{})
	return newDNSStream(st), nil
}

// exchange sends query and waits for its answer, for ctx's end (the query
// fails alone), or for the stream's end (errDNSStreamEnded).
func (s *dnsStream) exchange(ctx context.Context, query []byte) (proto.DNSAnswer, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return proto.DNSAnswer{}, ctxError(ctx)
	case <-s.done:
		return proto.DNSAnswer{}, s.err
	}
	id, answer, err := s.add()
	if err != nil {
		<-s.slots
		return proto.DNSAnswer{}, err
	}
	frame, err := proto.Append(nil, proto.DNSQuery{ID: id, Timeout: timeoutFor(ctx), Query: query})
	if err != nil {
		s.forget(id)
		return proto.DNSAnswer{}, fmt.Errorf("DNS query through the agent's tunnel: %w", err)
	}
	select {
	case s.wlock <- struct{}{}:
	case <-ctx.Done():
		s.forget(id)
		return proto.DNSAnswer{}, ctxError(ctx)
	case <-s.done:
		return proto.DNSAnswer{}, s.err
	}
	_, err = s.rw.Write(frame)
	<-s.wlock
	if err != nil {
		return proto.DNSAnswer{}, s.end(fmt.Errorf("send DNS query: %w", streamError("write", "tunnel", nil, nil, err)))
	}
	select {
	case a := <-answer:
		return a, nil
	case <-ctx.Done():
		return proto.DNSAnswer{}, ctxError(ctx) // the late answer frees the slot
	case <-s.done:
		return proto.DNSAnswer{}, s.err
	}
}

// add registers a new query and returns its id and where its answer goes.
func (s *dnsStream) add() (uint32, chan proto.DNSAnswer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, nil, s.err
	}
	id := s.nextID
	// Ids wrap after 2³² queries; 0 is not one, and one still in flight
	// (at most MaxDNSInFlight are) is skipped.
	for s.nextID++; s.nextID == 0 || s.pending[s.nextID] != nil; s.nextID++ {
	}
	answer := make(chan proto.DNSAnswer, 1)
	s.pending[id] = answer
	return id, answer, nil
}

// forget drops a query that was never sent.
func (s *dnsStream) forget(id uint32) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
	<-s.slots
}

// readAnswers hands each answer to its query until the stream ends, and
// returns why it ended. An answer that is not a DNSAnswer, or whose id is
// not in flight, ends the stream: the agent and this client disagree.
func (s *dnsStream) readAnswers() error {
	for {
		m, err := proto.ReadMessage(s.rw)
		if err != nil {
			return s.end(fmt.Errorf("read DNS answer: %w", err))
		}
		a, ok := m.(proto.DNSAnswer)
		if !ok {
			return s.end(fmt.Errorf("agent sent %s on the DNS stream, want DNSAnswer", m.Type()))
		}
		s.mu.Lock()
		answer := s.pending[a.ID]
		delete(s.pending, a.ID)
		s.mu.Unlock()
		if answer == nil {
			return s.end(fmt.Errorf("agent answered DNS query id %d, which is not in flight", a.ID))
		}
		answer <- a
		<-s.slots
	}
}

// end closes the stream once and fails every query still waiting; it
// returns the stream's error, which wraps errDNSStreamEnded.
func (s *dnsStream) end(why error) error {
	s.mu.Lock()
	if s.err == nil {
		s.err = fmt.Errorf("%w: %w", errDNSStreamEnded, why)
		close(s.done)
	}
	err := s.err
	s.mu.Unlock()
	_ = s.rw.Close()
	return err
}

func (s *dnsStream) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// runDNSStream opens the tunnel's DNS stream and reads its answers until
// it ends, which is mostly when the tunnel does. Until it is open, queries
// wait for it; when the agent refuses it, or it ends while the tunnel
// lives, the tunnel's queries take a stream each.
func (c *Client) runDNSStream(t *tunnel) {
	s, err := openDNSStream(t.sess, c.opts.CommunicationTimeout)
	if err != nil {
		close(t.dnsReady)
		switch {
		case errors.Is(err, errDNSStreamRefused):
			c.log.Info("DNS queries take a stream each on this tunnel", "agent", c.where(), "reason", err)
		case !t.sess.IsClosed():
			c.log.Warn("DNS queries take a stream each on this tunnel", "agent", c.where(), "err", err)
		}
		return
	}
	t.dns = s
	close(t.dnsReady)
	err = s.readAnswers()
	// After Close's goodbye the agent ends the stream with the tunnel: no news.
	if !t.sess.IsClosed() && !c.closing.Load() {
		c.log.Warn("DNS queries take a stream each until the next tunnel", "agent", c.where(), "err", err)
	}
}

// dnsStream waits until the tunnel's DNS stream is open and returns it,
// or nil when the tunnel's queries take a stream each.
func (t *tunnel) dnsStream(ctx context.Context) (*dnsStream, error) {
	select {
	case <-t.dnsReady:
	case <-ctx.Done():
		return nil, ctxError(ctx)
	}
	if t.dns == nil || t.dns.ended() {
		return nil, nil
	}
	return t.dns, nil
}
