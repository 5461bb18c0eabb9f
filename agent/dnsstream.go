package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/trafficpolice/trafficpolice/agent/mux"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// serveDNSStream accepts a DNSStream and resolves the client's queries on
// it until the client closes it or the tunnel ends.
func (s *Server) serveDNSStream(ctx context.Context, t *tunnel, st *mux.Stream) {
	defer st.Close()
	if err := proto.WriteMessage(st, proto.Result{}); err != nil {
		return
	}
	err := answerDNSQueries(ctx, st, proto.MaxDNSInFlight, func(ctx context.Context, q proto.DNSQuery) proto.DNSAnswer {
		ctx, cancel := context.WithTimeout(ctx, limit(q.Timeout, s.opts.CommunicationTimeout))
		defer cancel()
		answer, err := s.dns.resolve(ctx, q.Query)
		if err != nil {
			t.log.Debug("DNS query failed", "err", err)
			f := failure(err)
			return proto.DNSAnswer{Class: f.Class, Message: f.Message}
		}
		return proto.DNSAnswer{Answer: answer}
	})
	if err != nil && !t.sess.IsClosed() {
		t.log.Warn("DNS stream ended", "stream", st.StreamID(), "err", err)
	}
}

// answerDNSQueries reads DNSQuery frames from st and resolves each in a
// goroutine of its own, writing its DNSAnswer, with the query's id, as
// soon as resolve returns. It reads no further ahead than limit unanswered
// queries: a client that sends more waits (its frames stay in the stream's
// window), so one stream never holds more than limit queries and answers.
// When the client closes its end (EOF), the queries in flight are still
// answered; any other read error, or a frame other than DNSQuery, closes
// st, cancels them (they get no answer) and is returned, and so does
// ctx's end. It returns once every goroutine it started has ended.
func answerDNSQueries(ctx context.Context, st io.ReadWriteCloser, limit int,
	resolve func(context.Context, proto.DNSQuery) proto.DNSAnswer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Closing the stream is what ends a read blocked in it.
	stop := context.AfterFunc(ctx, func() { _ = st.Close() })
	defer stop()
	abort := func(err error) {
		cancel(err)
		_ = st.Close()
	}
	var (
		wg    sync.WaitGroup
		slots = make(chan struct{}, limit)
		wmu   sync.Mutex // one answer at a time on the stream
	)
	answer := func(q proto.DNSQuery) {
		defer wg.Done()
		a := resolve(ctx, q)
		if ctx.Err() != nil {
			// The stream or the tunnel is going away: an answer now
			// would be this failure, not the query's. Without one,
			// the client asks again on its next tunnel.
			<-slots
			return
		}
		a.ID = q.ID
		frame, err := proto.Append(nil, a)
		if err != nil {
			// An error text too long for the frame, say: the client
			// still hears that its query failed.
			frame, _ = proto.Append(nil, proto.DNSAnswer{ID: q.ID, Class: proto.ClassOther, Message: "the agent could not encode the answer"})
		}
		wmu.Lock()
		_, err = st.Write(frame)
		wmu.Unlock()
		<-slots // only now: the answer no longer takes room here
		if err != nil {
			// The stream is broken: nobody hears the other answers.
			abort(fmt.Errorf("write DNS answer: %w", err))
		}
	}
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			err := context.Cause(ctx)
			abort(err)
			wg.Wait()
			return err
		}
		m, err := proto.ReadMessage(st)
		if errors.Is(err, io.EOF) {
			wg.Wait()
			return nil
		}
		if err == nil {
			q, ok := m.(proto.DNSQuery)
			if ok {
				wg.Add(1)
				go answer(q)
				continue
			}
			err = fmt.Errorf("%s on a DNS stream: only DNSQuery may follow DNSStream", m.Type())
		}
		err = fmt.Errorf("read DNS query: %w", err)
		abort(err)
		wg.Wait()
		return err
	}
}
