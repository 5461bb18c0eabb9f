package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// pipeDNSStream is a client's DNS stream whose agent end the test plays:
// it reads the queries from agent and writes what it likes there.
func pipeDNSStream(t *testing.T) (s *dnsStream, agent net.Conn, readerErr func() error) {
	t.Helper()
	clientEnd, agentEnd := net.Pipe()
	s = newDNSStream(clientEnd)
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = s.readAnswers()
	}()
	t.Cleanup(func() {
		_ = agentEnd.Close()
		<-done
	})
	readerErr = func() error {
		select {
		case <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("readAnswers did not return within 10s")
			return nil
		}
	}
	_ = agentEnd.SetDeadline(time.Now().Add(30 * time.Second)) // a stuck test fails instead of hanging
	return s, agentEnd, readerErr
}

func readQuery(t *testing.T, agent net.Conn) proto.DNSQuery {
	t.Helper()
	m, err := proto.ReadMessage(agent)
	if err != nil {
		t.Fatalf("the agent's end read: %v", err)
	}
	q, ok := m.(proto.DNSQuery)
	if !ok {
		t.Fatalf("the client sent %s on its DNS stream, want DNSQuery", m.Type())
	}
	return q
}

func writeFrame(t *testing.T, agent net.Conn, m proto.Message) {
	t.Helper()
	if err := proto.WriteMessage(agent, m); err != nil {
		t.Fatalf("the agent's end write: %v", err)
	}
}

type exchangeResult struct {
	answer proto.DNSAnswer
	err    error
}

func goExchange(ctx context.Context, s *dnsStream, query string) <-chan exchangeResult {
	ch := make(chan exchangeResult, 1)
	go func() {
		a, err := s.exchange(ctx, []byte(query))
		ch <- exchangeResult{a, err}
	}()
	return ch
}

func waitResult(t *testing.T, ch <-chan exchangeResult) exchangeResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no result within 10s")
		return exchangeResult{}
	}
}

func TestDNSStreamSendsNoMoreThanMaxInFlight(t *testing.T) {
	s, agent, _ := pipeDNSStream(t)
	results := map[uint32]<-chan exchangeResult{}
	for i := range proto.MaxDNSInFlight {
		ch := goExchange(context.Background(), s, fmt.Sprintf("query %d", i))
		q := readQuery(t, agent)
		results[q.ID] = ch
	}
	// Every slot is taken: one more query waits for a slot, and gives up
	// when its context ends, without having been sent.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if r := waitResult(t, goExchange(ctx, s, "one too many")); !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("query beyond MaxDNSInFlight = %v, want it to wait until its deadline", r.err)
	}
	// An answer frees a slot; the next query is sent then, and it is the
	// first thing the agent's end reads after the 64th: "one too many"
	// never went out.
	writeFrame(t, agent, proto.DNSAnswer{ID: 1, Answer: []byte("answer 1")})
	if r := waitResult(t, results[1]); r.err != nil || string(r.answer.Answer) != "answer 1" {
		t.Fatalf("query 1 = %q, %v", r.answer.Answer, r.err)
	}
	next := goExchange(context.Background(), s, "next")
	q := readQuery(t, agent)
	if string(q.Query) != "next" {
		t.Fatalf("after a slot was freed the agent read %q, want %q", q.Query, "next")
	}
	if _, inFlight := results[q.ID]; inFlight {
		t.Errorf("the next query reuses id %d, which is still in flight", q.ID)
	}
	writeFrame(t, agent, proto.DNSAnswer{ID: q.ID, Answer: []byte("answer next")})
	if r := waitResult(t, next); r.err != nil || string(r.answer.Answer) != "answer next" {
		t.Fatalf("next = %q, %v", r.answer.Answer, r.err)
	}
	for id, ch := range results {
		if id == 1 {
			continue
		}
		writeFrame(t, agent, proto.DNSAnswer{ID: id, Answer: fmt.Appendf(nil, "answer %d", id)})
		if r := waitResult(t, ch); r.err != nil || string(r.answer.Answer) != fmt.Sprintf("answer %d", id) {
			t.Errorf("query %d = %q, %v", id, r.answer.Answer, r.err)
		}
	}
}

func TestDNSStreamQueryPastItsDeadlineFailsAlone(t *testing.T) {
	s, agent, _ := pipeDNSStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	slow := goExchange(ctx, s, "slow")
	slowQ := readQuery(t, agent)
	fast := goExchange(context.Background(), s, "fast")
	fastQ := readQuery(t, agent)
	cancel() // the app gave up on "slow"
	if r := waitResult(t, slow); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("slow = %v, want its context's error", r.err)
	}
	writeFrame(t, agent, proto.DNSAnswer{ID: fastQ.ID, Answer: []byte("fast answer")})
	if r := waitResult(t, fast); r.err != nil || string(r.answer.Answer) != "fast answer" {
		t.Fatalf("fast = %q, %v", r.answer.Answer, r.err)
	}
	// The late answer is no protocol error: it frees the slow query's
	// slot, and the stream goes on.
	writeFrame(t, agent, proto.DNSAnswer{ID: slowQ.ID, Class: proto.ClassTimeout, Message: "too late"})
	after := goExchange(context.Background(), s, "after")
	q := readQuery(t, agent)
	writeFrame(t, agent, proto.DNSAnswer{ID: q.ID, Answer: []byte("after answer")})
	if r := waitResult(t, after); r.err != nil || string(r.answer.Answer) != "after answer" {
		t.Fatalf("a query after the late answer = %q, %v", r.answer.Answer, r.err)
	}
	if len(s.slots) != 0 {
		t.Errorf("%d slots still taken with nothing in flight", len(s.slots))
	}
}

func TestDNSStreamRefusesAnOversizedQueryAlone(t *testing.T) {
	s, agent, _ := pipeDNSStream(t)
	_, err := s.exchange(context.Background(), make([]byte, proto.MaxDNSMessageSize+1))
	if err == nil || !strings.Contains(err.Error(), "exceeds the largest DNS message") || errors.Is(err, errDNSStreamEnded) {
		t.Fatalf("oversized query = %v, want it refused alone", err)
	}
	ch := goExchange(context.Background(), s, "small")
	q := readQuery(t, agent)
	writeFrame(t, agent, proto.DNSAnswer{ID: q.ID, Answer: []byte("ok")})
	if r := waitResult(t, ch); r.err != nil {
		t.Fatalf("a query after the oversized one: %v", r.err)
	}
}

func TestDNSStreamEndsOnWhatTheAgentMustNotSend(t *testing.T) {
	cases := map[string]struct {
		send func(t *testing.T, agent net.Conn, inFlight uint32)
		want string
	}{
		"unknown id": {func(t *testing.T, agent net.Conn, inFlight uint32) {
			writeFrame(t, agent, proto.DNSAnswer{ID: inFlight + 1000, Answer: []byte("stray")})
		}, "not in flight"},
		"answered twice": {func(t *testing.T, agent net.Conn, inFlight uint32) {
			writeFrame(t, agent, proto.DNSAnswer{ID: inFlight - 1, Answer: []byte("again")})
		}, fmt.Sprintf("id %d, which is not in flight", 1)},
		"another message": {func(t *testing.T, agent net.Conn, _ uint32) {
			writeFrame(t, agent, proto.Result{})
		}, "agent sent Result on the DNS stream, want DNSAnswer"},
		"oversized length": {func(t *testing.T, agent net.Conn, _ uint32) {
			_, _ = agent.Write([]byte{byte(proto.TypeDNSAnswer), 0x7f, 0xff, 0xff, 0xff})
		}, "exceeds the maximum of 131072"},
		"malformed": {func(t *testing.T, agent net.Conn, _ uint32) {
			_, _ = agent.Write([]byte{byte(proto.TypeDNSAnswer), 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0})
		}, "id 0 is invalid"},
		"cut short": {func(t *testing.T, agent net.Conn, _ uint32) {
			_, _ = agent.Write([]byte{byte(proto.TypeDNSAnswer), 0, 0, 0, 30, 0, 0, 0, 1})
			_ = agent.Close()
		}, "unexpected EOF"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s, agent, readerErr := pipeDNSStream(t)
			// Query 1 is answered, so that "answered twice" has one to repeat.
			first := goExchange(context.Background(), s, "first")
			writeFrame(t, agent, proto.DNSAnswer{ID: readQuery(t, agent).ID})
			if r := waitResult(t, first); r.err != nil {
				t.Fatal(r.err)
			}
			waiting := goExchange(context.Background(), s, "waiting")
			q := readQuery(t, agent)
			c.send(t, agent, q.ID)
			r := waitResult(t, waiting)
			if !errors.Is(r.err, errDNSStreamEnded) || !strings.Contains(r.err.Error(), c.want) {
				t.Fatalf("the query in flight = %v, want the stream's end naming %q", r.err, c.want)
			}
			if err := readerErr(); !errors.Is(err, errDNSStreamEnded) {
				t.Errorf("readAnswers = %v, want the stream's end", err)
			}
			if _, err := s.exchange(context.Background(), []byte("later")); !errors.Is(err, errDNSStreamEnded) {
				t.Errorf("a query on the ended stream = %v, want the stream's end", err)
			}
		})
	}
}

func TestDNSStreamIDsSkipZeroAndThoseInFlight(t *testing.T) {
	s := newDNSStream(nil)
	s.nextID = 0xffffffff
	s.pending[1] = make(chan proto.DNSAnswer, 1) // still in flight from before the wrap
	first, _, _ := s.add()
	second, _, _ := s.add()
	if first != 0xffffffff || second != 2 {
		t.Errorf("ids around the wrap = %d, %d; want 4294967295, 2 (0 is no id, 1 is in flight)", first, second)
	}
}

// agentBytes is a DNS stream whose agent sent data and nothing more.
type agentBytes struct{ io.Reader }

func (agentBytes) Write(p []byte) (int, error) { return len(p), nil }
func (agentBytes) Close() error                { return nil }

// FuzzDNSStreamAnswers feeds arbitrary bytes, as the agent's side of a
// DNS stream, to a client with queries 1 to 3 in flight. Whatever they
// are, the reader must end (at the latest when they do) with the stream's
// end, each query must get at most one answer, its own, and each answer
// must give its slot back.
func FuzzDNSStreamAnswers(f *testing.F) {
	var valid []byte
	for id := uint32(3); id >= 1; id-- {
		valid, _ = proto.Append(valid, proto.DNSAnswer{ID: id, Answer: []byte{0x12, 0x34, 0x81, 0x80}})
	}
	f.Add(valid)
	stray, _ := proto.Append(nil, proto.DNSAnswer{ID: 9, Class: proto.ClassTimeout, Message: "late"})
	f.Add(stray)
	f.Add(append(valid[:len(valid)/2:len(valid)/2], 0xff))
	f.Add([]byte{byte(proto.TypeDNSAnswer), 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newDNSStream(agentBytes{bytes.NewReader(data)})
		answers := map[uint32]chan proto.DNSAnswer{}
		for range 3 {
			s.slots <- struct{}{}
			id, ch, err := s.add()
			if err != nil {
				t.Fatal(err)
			}
			answers[id] = ch
		}
		if err := s.readAnswers(); !errors.Is(err, errDNSStreamEnded) {
			t.Fatalf("readAnswers = %v, want the stream's end", err)
		}
		delivered := 0
		for id, ch := range answers {
			select {
			case a := <-ch:
				delivered++
				if a.ID != id {
					t.Fatalf("query %d got the answer for %d", id, a.ID)
				}
			default:
			}
		}
		if len(s.slots) != 3-delivered {
			t.Fatalf("%d answers delivered, %d slots still taken; want %d", delivered, len(s.slots), 3-delivered)
		}
	})
}
