package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// memStream is the agent's end of a DNS stream in memory: it reads what
// the client sent from in and keeps what the agent writes.
type memStream struct {
	in       io.Reader
	consumed atomic.Int64

	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
	// keepWriting takes writes after Close too, so that a test sees what
	// the agent tried to write.
	keepWriting bool
}

func newMemStream(in []byte) *memStream { return &memStream{in: bytes.NewReader(in)} }

func (m *memStream) Read(p []byte) (int, error) {
	n, err := m.in.Read(p)
	m.consumed.Add(int64(n))
	return n, err
}

func (m *memStream) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed && !m.keepWriting {
		return 0, io.ErrClosedPipe
	}
	return m.out.Write(p)
}

// Close also ends a read blocked in in, as closing a yamux stream does.
func (m *memStream) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	if c, ok := m.in.(io.Closer); ok {
		_ = c.Close()
	}
	return nil
}

func (m *memStream) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// answers decodes what the agent wrote so far.
func (m *memStream) answers(t testing.TB) []proto.DNSAnswer {
	t.Helper()
	m.mu.Lock()
	b := slices.Clone(m.out.Bytes())
	m.mu.Unlock()
	var out []proto.DNSAnswer
	for len(b) > 0 {
		msg, n, err := proto.Decode(b)
		if err != nil {
			t.Fatalf("the agent wrote a bad frame: %v", err)
		}
		a, ok := msg.(proto.DNSAnswer)
		if !ok {
			t.Fatalf("the agent wrote %s on a DNS stream, want DNSAnswer", msg.Type())
		}
		out = append(out, a)
		b = b[n:]
	}
	return out
}

// queryFrames encodes n queries with ids 1..n, all with the same DNS
// message ID (as two apps' queries may have): only the frame's id tells
// them apart.
func queryFrames(t testing.TB, n int) []byte {
	t.Helper()
	var b []byte
	for i := 1; i <= n; i++ {
		var err error
		b, err = proto.Append(b, proto.DNSQuery{ID: uint32(i), Timeout: time.Second, Query: fmt.Appendf([]byte{0xab, 0xcd}, "query %d", i)})
		if err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after 10s waiting for %s", what)
		}
	}
}

func TestDNSStreamReadsNoFurtherThanItsLimit(t *testing.T) {
	const queries, limit = 3 * proto.MaxDNSInFlight, proto.MaxDNSInFlight
	frames := queryFrames(t, queries)
	firstFrames := int64(len(queryFrames(t, limit)))
	st := newMemStream(frames)
	var inResolve, peak atomic.Int64
	gate := make(chan struct{})
	resolve := func(_ context.Context, q proto.DNSQuery) proto.DNSAnswer {
		n := inResolve.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-gate
		inResolve.Add(-1)
		return proto.DNSAnswer{Answer: q.Query}
	}
	done := make(chan error, 1)
	go func() { done <- answerDNSQueries(context.Background(), st, limit, resolve) }()

	waitFor(t, fmt.Sprintf("%d queries in resolution", limit), func() bool { return inResolve.Load() >= limit })
	// Every slot is taken by a query that cannot finish: the agent must
	// not have read a single byte of the next one.
	if got, want := st.consumed.Load(), firstFrames; got != want {
		t.Errorf("with %d queries unanswered the agent read %d bytes, want exactly %d (%d queries)", limit, got, want, limit)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("answerDNSQueries = %v, want nil at the client's EOF", err)
	}
	if p := peak.Load(); p > limit {
		t.Errorf("%d queries were resolved at once, want at most %d", p, limit)
	}
	answered := map[uint32]string{}
	for _, a := range st.answers(t) {
		if _, dup := answered[a.ID]; dup {
			t.Errorf("query %d answered twice", a.ID)
		}
		answered[a.ID] = string(a.Answer[2:])
	}
	for i := 1; i <= queries; i++ {
		if got, want := answered[uint32(i)], fmt.Sprintf("query %d", i); got != want {
			t.Errorf("answer to query %d = %q, want %q", i, got, want)
		}
	}
}

func TestDNSStreamAnswersEachQueryWhenItIsResolved(t *testing.T) {
	const queries = 5
	st := newMemStream(queryFrames(t, queries))
	release := map[uint32]chan struct{}{}
	for i := 1; i <= queries; i++ {
		release[uint32(i)] = make(chan struct{})
	}
	resolve := func(_ context.Context, q proto.DNSQuery) proto.DNSAnswer {
		<-release[q.ID]
		return proto.DNSAnswer{Answer: q.Query}
	}
	done := make(chan error, 1)
	go func() { done <- answerDNSQueries(context.Background(), st, 8, resolve) }()
	// Resolved last to first: a slow query holds up no other.
	for i := queries; i >= 1; i-- {
		close(release[uint32(i)])
		waitFor(t, fmt.Sprintf("the answer to query %d", i), func() bool { return len(st.answers(t)) == queries-i+1 })
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for n, a := range st.answers(t) {
		if want := uint32(queries - n); a.ID != want || string(a.Answer[2:]) != fmt.Sprintf("query %d", want) {
			t.Errorf("answer %d = id %d %q, want id %d", n, a.ID, a.Answer, want)
		}
	}
}

func TestDNSStreamEndsOnWhatAClientMustNotSend(t *testing.T) {
	answer, err := proto.Append(nil, proto.DNSAnswer{ID: 1})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		after []byte
		want  string
	}{
		"another message":  {answer, "DNSAnswer on a DNS stream: only DNSQuery may follow DNSStream"},
		"oversized length": {[]byte{byte(proto.TypeDNSQuery), 0xff, 0xff, 0xff, 0xff}, "DNSQuery body length 4294967295 exceeds the maximum of 131072"},
		"id 0":             {[]byte{byte(proto.TypeDNSQuery), 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0}, "id 0 is invalid"},
		"unknown type":     {[]byte{99, 0, 0, 0, 0}, "frame type 99 is unknown"},
		"cut short":        {[]byte{byte(proto.TypeDNSQuery), 0, 0, 0, 20, 0, 0}, "unexpected EOF"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			st := newMemStream(append(queryFrames(t, 1), c.after...))
			cancelled := make(chan struct{})
			resolve := func(ctx context.Context, q proto.DNSQuery) proto.DNSAnswer {
				<-ctx.Done() // answered only when the stream is given up
				close(cancelled)
				return proto.DNSAnswer{Class: proto.ClassOther, Message: ctx.Err().Error()}
			}
			err := answerDNSQueries(context.Background(), st, 8, resolve)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("answerDNSQueries = %v, want an error containing %q", err, c.want)
			}
			select {
			case <-cancelled:
			default:
				t.Error("the query in flight was not cancelled")
			}
			if !st.isClosed() {
				t.Error("the stream was left open")
			}
		})
	}
}

func TestDNSStreamEndsWithItsContext(t *testing.T) {
	pr, pw := io.Pipe() // a client that sends nothing
	defer pw.Close()
	st := &memStream{in: pr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- answerDNSQueries(ctx, st, 8, func(context.Context, proto.DNSQuery) proto.DNSAnswer { return proto.DNSAnswer{} })
	}()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("answerDNSQueries = nil after its context ended, want the reason")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("answerDNSQueries did not return within 10s of its context's end")
	}
	if !st.isClosed() {
		t.Error("the stream was left open")
	}
}

func TestDNSStreamLeavesQueriesUnansweredWhenTheTunnelEnds(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	st := &memStream{in: pr, keepWriting: true}
	ctx, cancel := context.WithCancel(context.Background())
	resolving := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- answerDNSQueries(ctx, st, 8, func(ctx context.Context, q proto.DNSQuery) proto.DNSAnswer {
			close(resolving)
			<-ctx.Done()
			return proto.DNSAnswer{Class: proto.ClassTimeout, Message: "read udp: i/o timeout (" + ctx.Err().Error() + ")"}
		})
	}()
	if _, err := pw.Write(queryFrames(t, 1)); err != nil {
		t.Fatal(err)
	}
	<-resolving
	cancel() // the tunnel ends with the query in flight
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("answerDNSQueries did not return within 10s of its context's end")
	}
	// The failure is the tunnel's, not the query's: the client, which
	// asks again on its next tunnel, must not hear it as the answer.
	if a := st.answers(t); len(a) != 0 {
		t.Errorf("the agent answered %+v as its tunnel ended, want no answer", a)
	}
}

// FuzzDNSStream feeds arbitrary bytes, as a client's side of a DNS stream,
// to the agent. Whatever they are, it must return; a clean sequence of
// DNSQuery frames ends without error with every query answered once under
// its id; anything else is an error and only queries read before it are
// answered.
func FuzzDNSStream(f *testing.F) {
	f.Add(queryFrames(f, 3))
	f.Add(append(queryFrames(f, 2), byte(proto.TypeDNSAnswer), 0, 0, 0, 0))
	f.Add([]byte{byte(proto.TypeDNSQuery), 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var sent []proto.DNSQuery
		clean := true
		for rest := data; len(rest) > 0; {
			m, n, err := proto.Decode(rest)
			q, ok := m.(proto.DNSQuery)
			if err != nil || !ok {
				clean = false
				break
			}
			sent = append(sent, q)
			rest = rest[n:]
		}
		st := newMemStream(data)
		err := answerDNSQueries(context.Background(), st, 4, func(_ context.Context, q proto.DNSQuery) proto.DNSAnswer {
			return proto.DNSAnswer{Answer: q.Query}
		})
		if clean != (err == nil) {
			t.Fatalf("input clean=%v (%d queries), answerDNSQueries = %v", clean, len(sent), err)
		}
		want := map[uint32]int{}
		for _, q := range sent {
			want[q.ID]++
		}
		answers := st.answers(t)
		for _, a := range answers {
			if want[a.ID] == 0 {
				t.Fatalf("answer for id %d, which was not asked (or answered too often)", a.ID)
			}
			want[a.ID]--
		}
		if err == nil && len(answers) != len(sent) {
			t.Fatalf("%d queries, %d answers", len(sent), len(answers))
		}
	})
}
