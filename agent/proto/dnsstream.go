package proto

import (
	"errors"
	"fmt"
	"time"
)

// MaxDNSInFlight bounds the queries on one DNS stream that wait for their
// answer: the client sends no more before an answer frees a slot, and the
// agent reads no further ahead than that, so a peer can make the other
// hold at most this many queries (each at most MaxDNSMessageSize).
const MaxDNSInFlight = 64

// MaxDNSMessageSize is the largest DNS message: over TCP, DNS's own
// length prefix is a u16.
const MaxDNSMessageSize = 65535

// DNSStream asks the agent to resolve queries on this stream, many in
// flight at once, instead of one stream per query. The agent answers with
// a Result; after ClassOK the stream carries DNSQuery frames to the agent
// and DNSAnswer frames back.
type DNSStream struct{}

// DNSQuery is one query on a DNS stream.
type DNSQuery struct {
	// ID is the client's name for the query, unique among those in
	// flight on the stream and never 0. It is not the DNS message's own
	// ID, which the app chose and which two apps may share.
	ID uint32
	// Timeout bounds the resolution on the agent; zero means the agent's
	// default.
	Timeout time.Duration
	// Query is the raw DNS query, at most MaxDNSMessageSize bytes.
	Query []byte
}

// DNSAnswer answers the DNSQuery with the same ID, in whatever order the
// agent's resolutions end. Class, Message and Answer mean what a
// Result's Class, Message and Data mean for a DNS request.
type DNSAnswer struct {
	ID      uint32
	Class   Class
	Message string
	// Answer is the raw DNS answer, at most MaxDNSMessageSize bytes.
	Answer []byte
}

// Type implements Message.
func (DNSStream) Type() Type { return TypeDNSStream }

// Type implements Message.
func (DNSQuery) Type() Type { return TypeDNSQuery }

// Type implements Message.
func (DNSAnswer) Type() Type { return TypeDNSAnswer }

func (DNSStream) appendBody(b []byte) ([]byte, error) { return b, nil }

func (m DNSQuery) appendBody(b []byte) ([]byte, error) {
	if m.ID == 0 {
		return b, errDNSID
	}
	if len(m.Query) > MaxDNSMessageSize {
		return b, fmt.Errorf("query of %d bytes exceeds the largest DNS message, %d bytes", len(m.Query), MaxDNSMessageSize)
	}
	b, err := appendMillis(appendU32(b, m.ID), m.Timeout, "timeout")
	if err != nil {
		return b, err
	}
	return append(b, m.Query...), nil
}

func (m DNSAnswer) appendBody(b []byte) ([]byte, error) {
	if m.ID == 0 {
		return b, errDNSID
	}
	if len(m.Answer) > MaxDNSMessageSize {
		return b, fmt.Errorf("answer of %d bytes exceeds the largest DNS message, %d bytes", len(m.Answer), MaxDNSMessageSize)
	}
	return Result{Class: m.Class, Message: m.Message, Data: m.Answer}.appendBody(appendU32(b, m.ID))
}

var errDNSID = errors.New("id 0 is invalid: query ids start at 1")

func (d *decoder) dnsID() uint32 {
	id := d.u32("id")
	if d.err == nil && id == 0 {
		d.fail("%w", errDNSID)
	}
	return id
}

func (d *decoder) dnsMessage(field string) []byte {
	if d.err == nil && len(d.b) > MaxDNSMessageSize {
		d.fail("%s of %d bytes exceeds the largest DNS message, %d bytes", field, len(d.b), MaxDNSMessageSize)
		return nil
	}
	return d.rest()
}

func (d *decoder) dnsQuery() DNSQuery {
	return DNSQuery{ID: d.dnsID(), Timeout: d.millis("timeout"), Query: d.dnsMessage("query")}
}

func (d *decoder) dnsAnswer() DNSAnswer {
	a := DNSAnswer{ID: d.dnsID(), Class: d.class(), Message: d.str("message")}
	a.Answer = d.dnsMessage("answer")
	return a
}
