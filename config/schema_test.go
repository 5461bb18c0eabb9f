package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite config/schema.json from the key table")

// config/schema.json is what Schema writes. When the key table changes, regenerate it:
//
//	go test ./config -run TestSchemaFileIsCurrent -update
//
// (or `trafficpolice config schema > config/schema.json`).
func TestSchemaFileIsCurrent(t *testing.T) {
	want, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("schema.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("schema.json")
	if err != nil {
		t.Fatalf("%v; write it with: go test ./config -run TestSchemaFileIsCurrent -update", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("config/schema.json is not what the key table gives; regenerate it with:\n" +
			"  go test ./config -run TestSchemaFileIsCurrent -update")
	}
}

// compiledSchema compiles Schema's output as an editor would.
func compiledSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	data, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatalf("the schema does not compile: %v", err)
	}
	return s
}

// asJSON turns a document of any format into the JSON value a schema validates.
func asJSON(t *testing.T, data []byte, format Format) any {
	t.Helper()
	var v any
	switch format {
	case YAML:
		if err := yaml.Unmarshal(data, &v); err != nil {
			t.Fatal(err)
		}
	case TOML:
		var m map[string]any
		if _, err := toml.Decode(string(data), &m); err != nil {
			t.Fatal(err)
		}
		v = m
	default:
		b, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// What Parse accepts, the schema accepts: the samples, the fuzz seeds, and files that set
// keys trafficpolice ignores.
func TestSchemaAcceptsWhatParseAccepts(t *testing.T) {
	s := compiledSchema(t)
	docs := map[string]struct {
		data   []byte
		format Format
	}{}
	files, _ := filepath.Glob("testdata/*")
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.IsDir() {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[f] = struct {
			data   []byte
			format Format
		}{data, FormatForPath(f)}
	}
	seeds, _ := filepath.Glob("testdata/fuzz/FuzzParse/*")
	for _, f := range seeds {
		data, format := readSeed(t, f)
		docs[f] = struct {
			data   []byte
			format Format
		}{data, format}
	}
	accepted := 0
	for name, d := range docs {
		if _, err := Parse(d.data, d.format); err != nil {
			continue
		}
		accepted++
		if err := s.Validate(asJSON(t, d.data, d.format)); err != nil {
			t.Errorf("%s: Parse accepts it, the schema does not: %v", name, err)
		}
	}
	if accepted < 6 {
		t.Fatalf("only %d sample files parse; the test proves little", accepted)
	}
}

// readSeed reads a fuzz seed file of FuzzParse: the document and its format.
func readSeed(t *testing.T, path string) ([]byte, Format) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasPrefix(lines[2], "byte(") {
		t.Fatalf("%s: not a FuzzParse seed", path)
	}
	data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, _, _, err := strconv.UnquoteChar(strings.TrimSuffix(strings.TrimPrefix(lines[2], "byte('"), "')"), '\'')
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(data), Format(b % 3)
}

// Unknown keys and values of the wrong type, which Parse refuses, the schema refuses too, so
// an editor marks them where they are typed.
func TestSchemaRefusesTyposAndWrongTypes(t *testing.T) {
	s := compiledSchema(t)
	for _, doc := range []string{
		`{"feature":{"network":{"outgoin":{}}}}`,
		`{"Feature":{}}`,
		`{"agent":{"startup-timeout":5}}`,
		`{"feature":{"network":{"incoming":{"http_filter":{"all_of":[{"heder":"b"}]}}}}}`,
		`{"feature":{"network":{"incoming":"stel"}}}`,
		`{"feature":{"network":{"outgoing":{"tcp":"true"}}}}`,
		`{"feature":{"network":{"incoming":{"ports":[80,70000]}}}}`,
		`{"feature":{"network":{"incoming":{"port_mapping":[[9333,80,1]]}}}}`,
		`{"agent":{"ttl":70000}}`,
		`{"agent":{"startup_timeout":"60s"}}`,
		`{"feature":{"network":{"outgoing":{"filter":{"local":[8888]}}}}}`,
		`{"feature":{"env":{"override":{"PORT":8080}}}}`,
		`{"target":7}`,
		`{"feature":{"fs":"READ"}}`,
		`{"agent":{"log_level":3}}`,
		`{"agent":{"disabled_capabilities":"NET_RAW"}}`,
	} {
		if _, err := Parse([]byte(doc), JSON); err == nil {
			t.Fatalf("Parse accepts %s; the case is wrong", doc)
		}
		if err := s.Validate(asJSON(t, []byte(doc), JSON)); err == nil {
			t.Errorf("the schema accepts %s, which Parse refuses", doc)
		}
	}
}

// Every key of the table is in the schema, with a description an editor can show.
func TestSchemaDescribesEveryKey(t *testing.T) {
	data, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := json.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	if root["$schema"] != SchemaDialect {
		t.Errorf("$schema = %v", root["$schema"])
	}
	visited := map[string]bool{}
	var walk func(path string, obj map[string]any, fields []field)
	walk = func(path string, obj map[string]any, fields []field) {
		visited[path] = true
		props, _ := obj["properties"].(map[string]any)
		if len(props) != len(fields) || obj["additionalProperties"] != false {
			t.Errorf("%s: %d properties for %d keys, additionalProperties %v", path, len(props), len(fields), obj["additionalProperties"])
		}
		for _, f := range fields {
			p, _ := props[f.name].(map[string]any)
			if d, _ := p["description"].(string); d == "" {
				t.Errorf("%s: no description", joinPath(path, f.name))
			}
			for _, a := range f.value {
				if a.fields == nil || f.kind != fSupported {
					continue
				}
				// Find the object alternative among anyOf (or the schema itself).
				alts, _ := p["anyOf"].([]any)
				for _, x := range alts {
					if m, ok := x.(map[string]any); ok && m["properties"] != nil && len(m["properties"].(map[string]any)) == len(a.fields) {
						walk(joinPath(path, f.name), m, a.fields)
					}
				}
			}
		}
	}
	walk("", root, rootFields)
	for _, p := range []string{"agent", "feature.network.incoming.http_filter", "feature.env", "target", "agent.image"} {
		if !visited[p] {
			t.Errorf("the walk did not reach %s", p)
		}
	}
}
