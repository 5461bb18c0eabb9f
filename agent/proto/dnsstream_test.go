package proto

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// dnsFrame builds a frame of type t around body by hand, so that the
// decoder can be given what the encoder refuses to write.
func dnsFrame(t Type, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	return append(binary.BigEndian.AppendUint32([]byte{byte(t)}, uint32(len(b))), b...)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func TestDNSFramesRejectWhatAPeerMustNotSend(t *testing.T) {
	tooBig := make([]byte, MaxDNSMessageSize+1)
	cases := map[string]struct {
		frame []byte
		want  string
	}{
		"query id 0":          {dnsFrame(TypeDNSQuery, u32(0), u32(1000), []byte{1, 2}), "id 0 is invalid"},
		"answer id 0":         {dnsFrame(TypeDNSAnswer, u32(0), []byte{0, 0, 0}), "id 0 is invalid"},
		"query too big":       {dnsFrame(TypeDNSQuery, u32(1), u32(1000), tooBig), "query of 65536 bytes exceeds the largest DNS message, 65535 bytes"},
		"answer too big":      {dnsFrame(TypeDNSAnswer, u32(1), []byte{0, 0, 0}, tooBig), "answer of 65536 bytes exceeds the largest DNS message"},
		"answer class":        {dnsFrame(TypeDNSAnswer, u32(1), []byte{7, 0, 0}), "result class 7 is unknown"},
		"short id":            {dnsFrame(TypeDNSQuery, []byte{0, 1}), "id needs 4 bytes, 2 left"},
		"no timeout":          {dnsFrame(TypeDNSQuery, u32(1), []byte{0, 0}), "timeout needs 4 bytes, 2 left"},
		"message past body":   {dnsFrame(TypeDNSAnswer, u32(1), []byte{0, 0, 9, 'x'}), "message needs 9 bytes, 1 left"},
		"stream with a body":  {dnsFrame(TypeDNSStream, []byte{1}), "1 bytes left over"},
		"length over maximum": {[]byte{byte(TypeDNSAnswer), 0x00, 0x02, 0x00, 0x01}, "DNSAnswer body length 131073 exceeds the maximum of 131072"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := Decode(c.frame)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Decode = %v, want an error containing %q", err, c.want)
			}
			// The stream reader says the same, and reads no body whose
			// length is over the maximum (the frame above has none).
			_, err = ReadMessage(bytes.NewReader(c.frame))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ReadMessage = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestDNSFramesRefuseToEncodeWhatThePeerWouldReject(t *testing.T) {
	tooBig := make([]byte, MaxDNSMessageSize+1)
	cases := map[string]struct {
		m    Message
		want string
	}{
		"query id 0":     {DNSQuery{Query: []byte{1}}, "id 0 is invalid"},
		"answer id 0":    {DNSAnswer{}, "id 0 is invalid"},
		"query too big":  {DNSQuery{ID: 1, Query: tooBig}, "query of 65536 bytes exceeds"},
		"answer too big": {DNSAnswer{ID: 1, Answer: tooBig}, "answer of 65536 bytes exceeds"},
		"answer class":   {DNSAnswer{ID: 1, Class: 9}, "result class 9 is unknown"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Append(nil, c.m); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Append = %v, want an error containing %q", err, c.want)
			}
		})
	}
	// The largest of each still travels.
	for _, m := range []Message{
		DNSQuery{ID: 1, Query: make([]byte, MaxDNSMessageSize)},
		DNSAnswer{ID: 1, Answer: make([]byte, MaxDNSMessageSize), Message: strings.Repeat("m", 1000)},
	} {
		b, err := Append(nil, m)
		if err != nil {
			t.Fatalf("Append %s of the largest size: %v", m.Type(), err)
		}
		if _, _, err := Decode(b); err != nil {
			t.Fatalf("Decode %s of the largest size: %v", m.Type(), err)
		}
	}
}
