package config

import (
	"strings"
	"testing"
)

// The seed blog post's two sample configs, copied verbatim, fail with messages that say what
// is wrong and where; their corrected versions load.
func TestSeedSamples(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"testdata/seed-filter.json",
			`testdata/seed-filter.json:2:3: invalid character 'f' looking for beginning of object key string; ` +
				`hint: the key feature" is missing its opening quote: write "feature"`},
		{"testdata/seed-uwu.json",
			`testdata/seed-uwu.json:2:13: invalid character “ (a typographic quote) looking for beginning of value; ` +
				`hint: the file holds typographic quotes (“ at 2:13, ” at 2:25); JSON needs straight quotes "`},
	} {
		_, err := Load(tc.path)
		if err == nil {
			t.Fatalf("%s loaded, want a syntax error", tc.path)
		}
		if err.Error() != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.path, err, tc.want)
		}
		p := problems(t, err)
		if len(p) != 1 || p[0].Line == 0 || p[0].Col == 0 {
			t.Errorf("%s: problems %+v, want one with a line and a column", tc.path, p)
		}
	}

	c, err := Load("testdata/seed-filter.fixed.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Feature.Network.Outgoing.Filter.Local; len(got) != 1 || got[0] != "app-db" {
		t.Errorf("seed-filter.fixed.json: local = %q, want [app-db]", got)
	}
	c, err = Load("testdata/seed-uwu.fixed.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.Target.Path != "pod/uwu-app" || c.Feature.Network.Incoming.Mode != "steal" ||
		len(c.Feature.Network.Outgoing.Filter.Local) != 1 || c.Feature.Network.Outgoing.Filter.Local[0] != ":8888" {
		t.Errorf("seed-uwu.fixed.json: %+v", c)
	}
}

func TestSyntaxErrorsNameLineColumnAndHint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format Format
		data   string
		want   string
	}{
		{"trailing comma", JSON, "{\"target\": \"pod/a\",\n}",
			`2:1: invalid character '}' looking for beginning of object key string; hint: JSON allows no comma before }; remove the trailing comma`},
		{"trailing comma in list", JSON, `{"feature":{"network":{"outgoing":{"filter":{"local":["a",]}}}}}`,
			`1:59: invalid character ']' looking for beginning of value; hint: JSON allows no comma before ]; remove the trailing comma`},
		{"comment", JSON, "{\n  \"target\": \"pod/a\" // the pod\n}",
			`2:21: invalid character '/' after object key:value pair; hint: JSON has no comments; remove // and /* */ comments`},
		{"missing comma", JSON, "{\"target\": \"pod/a\"\n \"agent\": {}}",
			`2:2: invalid character '"' after object key:value pair; hint: a comma is missing before this`},
		{"missing colon", JSON, `{"target" "pod/a"}`,
			`1:11: invalid character '"' after object key; hint: a colon : must follow the key`},
		{"single quotes", JSON, `{'target': 'pod/a'}`,
			`1:2: invalid character '\'' looking for beginning of object key string; hint: JSON needs double quotes " around keys and strings, not '`},
		{"bare key", JSON, `{target: "pod/a"}`,
			`1:2: invalid character 't' looking for beginning of object key string; hint: keys need double quotes: write "target"`},
		{"value missing its opening quote", JSON, `{"target": pod/a"}`,
			`1:12: invalid character 'p' looking for beginning of value; hint: the string pod/a" is missing its opening quote: write "pod/a"`},
		{"Python boolean", JSON, `{"agent": {"ephemeral": True}}`,
			`1:25: invalid character 'T' looking for beginning of value; hint: JSON's booleans are true and false`},
		{"unclosed", JSON, "{\"target\": \"pod/a\"\n",
			`1:19: unexpected end of the file; a closing } or ] or " is missing`},
		{"two values", JSON, `{"target": "pod/a"}{}`,
			`1:20: invalid character '{' after top-level value; hint: the file holds more than one JSON value; keep one object`},
		{"empty", JSON, " \n", `1:1: the file is empty; an empty configuration is {}`},
		{"template", JSON, `{"target": {{ get_env(name="T") }}}`,
			`1:13: invalid character '{' looking for beginning of object key string; hint: mirrord's templates ({{ ... }}, {% ... %}) are not supported yet by trafficpolice; write the values literally`},
		{"YAML tab", YAML, "feature:\n\tnetwork: {}\n",
			`2: found character that cannot start any token; hint: YAML indents with spaces, not tabs`},
		{"YAML unclosed list", YAML, "feature:\n  network:\n    outgoing: [\n",
			`3: did not find expected node content`},
		{"YAML two documents", YAML, "target: pod/a\n---\ntarget: pod/b\n",
			`the file holds more than one YAML document (---); keep one`},
		{"TOML typographic quotes", TOML, "target = “pod/uwu-app”\n",
			`1:10: expected value but found '“' instead; hint: the file holds typographic quotes (“ at 1:10, ” at 1:22); TOML needs straight quotes "`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.data), tc.format)
			if err == nil {
				t.Fatalf("Parse succeeded, want %s", tc.want)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestByteOrderMarkIsIgnored(t *testing.T) {
	for _, f := range []Format{JSON, YAML, TOML} {
		doc := map[Format]string{JSON: `{"target": "pod/a"}`, YAML: "target: pod/a\n", TOML: "target = \"pod/a\"\n"}[f]
		c := mustParse(t, "\xef\xbb\xbf"+doc, f)
		if c.Target.Path != "pod/a" {
			t.Errorf("%s: target %q", f, c.Target.Path)
		}
	}
}

func TestTypographicQuotesInYAMLValue(t *testing.T) {
	_, err := Parse([]byte("target: “pod/uwu-app”\n"), YAML)
	if err == nil || !strings.Contains(err.Error(), `is wrapped in typographic quotes “ ”; use straight quotes "`) {
		t.Errorf("got %v", err)
	}
}
