package proto

import (
	"fmt"
	"net/netip"
	"time"
)

// Version is the protocol version this build speaks. Version 3 moved the
// handshake before the yamux session (see the package doc).
const Version uint16 = 3

// MaxBodySize bounds a frame's body. It leaves room for the largest DNS
// message (64 KiB) plus the fields around it; anything bigger is an attack
// or a bug, not a message.
const MaxBodySize = 1 << 17

// HeaderSize is the size of a frame's header: type u8, length u32.
const HeaderSize = 5

// Type identifies a message on the wire.
type Type uint8

// The message types; the numbers are the wire values.
const (
	TypeHello   Type = 1
	TypeWelcome Type = 2
	TypeRefused Type = 3
	TypeDialTCP Type = 4
	TypeDialUDP Type = 5
	TypeDNS     Type = 6
	TypePing    Type = 7
	TypeResult  Type = 8
	TypeAbort   Type = 9
	// Since version 2: incoming traffic (steal and mirror).
	TypeSubscribe Type = 10
	TypeIncoming  Type = 11
	// Env asks for the target process's environment. An agent that does
	// not know it fails to decode it and closes the stream, which the
	// client takes as "no environment to import", so no version bump.
	TypeEnv Type = 12
	// DNSStream opens a stream of pipelined DNS queries, DNSQuery and
	// DNSAnswer travel on it. An agent that does not know DNSStream fails
	// to decode it and closes the stream, and the client goes on with a
	// stream per query, so no version bump.
	TypeDNSStream Type = 13
	TypeDNSQuery  Type = 14
	TypeDNSAnswer Type = 15
	// Retire asks a shared agent to leave once this client is gone, if
	// no other client is connected. An agent that does not know it
	// closes the stream, which the client takes as "it stays" (it still
	// exits by itself once idle), so no version bump.
	TypeRetire Type = 16
	maxType         = TypeRetire
)

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "Hello"
	case TypeWelcome:
		return "Welcome"
	case TypeRefused:
		return "Refused"
	case TypeDialTCP:
		return "DialTCP"
	case TypeDialUDP:
		return "DialUDP"
	case TypeDNS:
		return "DNS"
	case TypePing:
		return "Ping"
	case TypeResult:
		return "Result"
	case TypeAbort:
		return "Abort"
	case TypeSubscribe:
		return "Subscribe"
	case TypeIncoming:
		return "Incoming"
	case TypeEnv:
		return "Env"
	case TypeDNSStream:
		return "DNSStream"
	case TypeDNSQuery:
		return "DNSQuery"
	case TypeDNSAnswer:
		return "DNSAnswer"
	case TypeRetire:
		return "Retire"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Message is one protocol message.
type Message interface {
	// Type is the message's wire type.
	Type() Type
	appendBody(b []byte) ([]byte, error)
}

// Hello opens a tunnel: the client's protocol version and shared token.
type Hello struct {
	Version uint16
	Token   string
}

// Welcome accepts a tunnel and tells the client about the pod.
type Welcome struct {
	Version uint16
	Facts   Facts
}

// RefuseCode says why the agent refused a tunnel.
type RefuseCode uint8

// The refusal codes.
const (
	RefuseToken   RefuseCode = 1
	RefuseVersion RefuseCode = 2
	// RefuseRetiring: the agent agreed to leave with its last client and
	// takes no new one; start (or join) another agent.
	RefuseRetiring RefuseCode = 3
)

func (c RefuseCode) String() string {
	switch c {
	case RefuseToken:
		return "token"
	case RefuseVersion:
		return "version"
	case RefuseRetiring:
		return "retiring"
	}
	return fmt.Sprintf("RefuseCode(%d)", uint8(c))
}

// Refused rejects a tunnel.
type Refused struct {
	Code   RefuseCode
	Reason string
}

// Facts describe the pod the agent runs in, as the sandbox needs them to
// make the app's view match the pod's.
type Facts struct {
	Hostname      string
	Addresses     []netip.Addr
	SearchDomains []string
	Ndots         int
	// Options are the other resolv.conf "options" (e.g. "timeout:2").
	Options []string
	// IncomingError says why the agent cannot steal or mirror the pod's
	// traffic (no iptables, no NET_ADMIN); empty when it can.
	IncomingError string
}

// DialTCP asks the agent to open a TCP connection from the pod to Dst.
type DialTCP struct {
	// Timeout bounds the dial on the agent; zero means the agent's default.
	Timeout time.Duration
	Dst     netip.AddrPort
}

// DialUDP asks the agent to open a UDP flow from the pod to Dst.
type DialUDP struct {
	Timeout time.Duration
	Dst     netip.AddrPort
}

// DNS asks the agent to resolve one raw DNS query the way the pod would.
type DNS struct {
	Timeout time.Duration
	Query   []byte
}

// Ping asks the agent for an empty Result, to measure the round trip
// through the tunnel and the agent.
type Ping struct{}

// Env asks the agent for the environment of the target's process, as
// the pod's app sees it; the answer is a Result whose Data holds it (see
// EncodeEnv).
type Env struct{}

// Retire asks the agent to leave once the asking client is gone, if it is
// the only client connected: the answer is a Result of class ok (the agent
// now refuses new clients with RefuseRetiring and exits when the asker
// disconnects) or refused (Message says why it stays: other clients, or an
// agent not started for runs).
type Retire struct{}

// Class is the outcome class of a request.
type Class uint8

// The outcome classes; the numbers are the wire values.
const (
	ClassOK              Class = 0
	ClassRefused         Class = 1
	ClassHostUnreachable Class = 2
	ClassNetUnreachable  Class = 3
	ClassTimeout         Class = 4
	ClassNameNotFound    Class = 5
	ClassOther           Class = 6
	maxClass                   = ClassOther
)

func (c Class) String() string {
	switch c {
	case ClassOK:
		return "ok"
	case ClassRefused:
		return "refused"
	case ClassHostUnreachable:
		return "host-unreachable"
	case ClassNetUnreachable:
		return "net-unreachable"
	case ClassTimeout:
		return "timeout"
	case ClassNameNotFound:
		return "name-not-found"
	case ClassOther:
		return "other"
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
}

// Result answers a request.
type Result struct {
	Class   Class
	Message string
	// Data is the raw DNS answer for a DNS request; empty otherwise.
	Data []byte
}

// Abort drops one flow abruptly; it travels on the control stream.
type Abort struct {
	StreamID uint32
}

// Type implements Message.
func (Hello) Type() Type { return TypeHello }

// Type implements Message.
func (Welcome) Type() Type { return TypeWelcome }

// Type implements Message.
func (Refused) Type() Type { return TypeRefused }

// Type implements Message.
func (DialTCP) Type() Type { return TypeDialTCP }

// Type implements Message.
func (DialUDP) Type() Type { return TypeDialUDP }

// Type implements Message.
func (DNS) Type() Type { return TypeDNS }

// Type implements Message.
func (Ping) Type() Type { return TypePing }

// Type implements Message.
func (Result) Type() Type { return TypeResult }

// Type implements Message.
func (Abort) Type() Type { return TypeAbort }

// Type implements Message.
func (Env) Type() Type { return TypeEnv }

// Type implements Message.
func (Retire) Type() Type { return TypeRetire }
