package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// SchemaDialect is the JSON Schema version Schema writes.
const SchemaDialect = "https://json-schema.org/draft/2020-12/schema"

// Schema returns the JSON Schema of the configuration file, written from the same key table
// the decoder walks, so that editors complete keys and catch typos and wrong types as
// trafficpolice would. It is looser than Parse where keys depend on each other ("local" and
// "remote" together, one filter per http_filter): those stay Parse's to report. Keys that
// trafficpolice ignores or refuses are in it, with their mirrord types, and say so.
// config/schema.json is its output; `trafficpolice config schema` prints it.
func Schema() ([]byte, error) {
	root := map[string]any{
		"$schema":     SchemaDialect,
		"title":       "trafficpolice configuration",
		"description": "mirrord's configuration format as trafficpolice reads it (JSON, YAML or TOML). Keys marked ignored load with a warning (--strict refuses them); keys marked refused are errors.",
	}
	for k, v := range objectSchema(rootFields) {
		root[k] = v
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("encode the configuration's JSON Schema: %w", err)
	}
	return buf.Bytes(), nil
}

// objectSchema is an object holding exactly these keys, each of which may be null (mirrord's
// "not set").
func objectSchema(fields []field) map[string]any {
	props := make(map[string]any, len(fields))
	for _, f := range fields {
		s := nullable(f.value.schema())
		if d := f.describe(); d != "" {
			s["description"] = d
		}
		props[f.name] = s
	}
	return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
}

// describe says what the key means, or what trafficpolice does with it.
func (f field) describe() string {
	switch f.kind {
	case fIgnored:
		if f.name == "fs" {
			return "Ignored by trafficpolice, with a warning (--strict refuses it): the app uses the local file system. Accepted silently: false, \"local\"."
		}
		return "Ignored by trafficpolice, with a warning (--strict refuses it): " + f.means(nil) + "."
	case fRefused:
		return "Refused by trafficpolice: " + f.why + "."
	}
	return f.doc
}

func (s shape) schema() map[string]any {
	switch len(s) {
	case 0:
		return map[string]any{}
	case 1:
		return s[0].schema()
	}
	alts := make([]any, len(s))
	for i, a := range s {
		alts[i] = a.schema()
	}
	return map[string]any{"anyOf": alts}
}

func (a alt) schema() map[string]any {
	switch a.t {
	case "string":
		if a.enum != nil {
			return map[string]any{"type": "string", "enum": a.enum}
		}
	case "integer":
		s := map[string]any{"type": "integer", "minimum": a.lo}
		if a.hi != math.MaxInt64 {
			s["maximum"] = a.hi
		}
		return s
	case "array":
		s := map[string]any{"type": "array"}
		if a.items != nil {
			s["items"] = a.items.schema()
		}
		if a.length > 0 {
			s["minItems"], s["maxItems"] = a.length, a.length
		}
		return s
	case "object":
		switch {
		case a.fields != nil:
			return objectSchema(a.fields)
		case a.values != nil:
			return map[string]any{"type": "object", "additionalProperties": a.values.schema()}
		}
	}
	return map[string]any{"type": a.t}
}

// nullable lets s also be null: mirrord reads null as "not set".
func nullable(s map[string]any) map[string]any {
	if len(s) == 0 {
		return s // anything, null included
	}
	if t, ok := s["type"].(string); ok && len(s) == 1 {
		return map[string]any{"type": []string{t, "null"}}
	}
	if alts, ok := s["anyOf"].([]any); ok {
		return map[string]any{"anyOf": append(alts, map[string]any{"type": "null"})}
	}
	return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
}
