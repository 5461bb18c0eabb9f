package proto

import (
	"strings"
	"testing"
)

func TestSubscribeRejectsBadFields(t *testing.T) {
	deep := HTTPFilter{Kind: FilterHeader, Pattern: "x"}
	for range MaxFilterDepth {
		deep = HTTPFilter{Kind: FilterAllOf, Filters: []HTTPFilter{deep}}
	}
	cases := map[string]struct {
		m    Message
		want string
	}{
		"mode":           {Subscribe{Mode: 9, Port: 80}, "incoming mode 9 is unknown"},
		"port":           {Subscribe{Mode: ModeSteal}, "port 0 is invalid"},
		"empty all_of":   {Subscribe{Mode: ModeSteal, Port: 1, Filter: HTTPFilter{Kind: FilterAllOf}}, "needs 1 to"},
		"pattern on any": {Subscribe{Mode: ModeSteal, Port: 1, Filter: HTTPFilter{Kind: FilterAnyOf, Pattern: "x"}}, "not a pattern"},
		"kind":           {Subscribe{Mode: ModeSteal, Port: 1, Filter: HTTPFilter{Kind: 77}}, "filter kind 77 is unknown"},
		"too deep":       {Subscribe{Mode: ModeSteal, Port: 1, Filter: deep}, "deeper than"},
		"incoming mode":  {Incoming{Port: 80}, "incoming mode 0 is unknown"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Append(nil, c.m); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Append = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestDecodeRejectsBadSubscribe(t *testing.T) {
	cases := map[string]struct {
		body []byte
		want string
	}{
		"mode":      {[]byte{3, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "incoming mode 3 is unknown"},
		"port zero": {[]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "port 0 is invalid"},
		"kind":      {[]byte{1, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 9}, "filter kind 9 is unknown"},
		"empty any": {[]byte{1, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0}, "at least one member"},
		"too deep":  {[]byte{1, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 4, 0, 1, 4, 0, 1, 4, 0, 1, 4, 0, 1, 0}, "deeper than"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			frame := append([]byte{byte(TypeSubscribe), 0, 0, 0, byte(len(c.body))}, c.body...)
			if _, _, err := Decode(frame); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Decode = %v, want an error containing %q", err, c.want)
			}
		})
	}
}
