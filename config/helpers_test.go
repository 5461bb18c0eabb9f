package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v3"
)

// sameInFormats renders a JSON document in all three formats, so that a test can check they
// decode alike. Formats that cannot hold the document (TOML has no null and needs a table at
// the top) are left out.
func sameInFormats(t *testing.T, doc string) map[Format][]byte {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("test case is not JSON: %v\n%s", err, doc)
	}
	v = plain(v)
	out := map[Format][]byte{JSON: []byte(doc)}
	y, err := yaml.Marshal(v)
	if err != nil {
		t.Fatalf("render YAML: %v", err)
	}
	out[YAML] = y
	if m, ok := v.(map[string]any); ok && !hasNull(v) {
		var b bytes.Buffer
		if err := toml.NewEncoder(&b).Encode(m); err == nil {
			out[TOML] = b.Bytes()
		}
	}
	return out
}

// plain turns json.Number into int64 or float64, as YAML and TOML hold them.
func plain(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = plain(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = plain(x[k])
		}
	}
	return v
}

func hasNull(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case []any:
		for _, e := range x {
			if hasNull(e) {
				return true
			}
		}
	case map[string]any:
		for _, e := range x {
			if hasNull(e) {
				return true
			}
		}
	}
	return false
}

func mustParse(t *testing.T, data string, f Format) *Config {
	t.Helper()
	c, err := Parse([]byte(data), f)
	if err != nil {
		t.Fatalf("Parse(%s) failed: %v\n%s", f, err, data)
	}
	return c
}

// problems returns the problems of a failed Parse or Load.
func problems(t *testing.T, err error) []Problem {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *config.Error", err, err)
	}
	return ce.Problems
}
