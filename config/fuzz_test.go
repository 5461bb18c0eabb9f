package config

import (
	"errors"
	"os"
	"reflect"
	"testing"
)

// FuzzParse feeds the loader arbitrary bytes in each format. It must never panic; what it
// accepts must validate, print, and parse back to the same Config.
func FuzzParse(f *testing.F) {
	for _, path := range []string{"testdata/full.json", "testdata/full.yaml", "testdata/full.toml",
		"testdata/seed-filter.json", "testdata/seed-uwu.json"} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(FormatForPath(path)))
	}
	f.Fuzz(func(t *testing.T, data []byte, format uint8) {
		c, err := Parse(data, Format(format%3))
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %v (%T) lists no problems", err, err)
			}
			_ = err.Error()
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse returned a config that does not validate: %v", err)
		}
		out, err := c.Effective()
		if err != nil {
			t.Fatalf("Effective: %v", err)
		}
		back, err := Parse(out, JSON)
		if err != nil {
			t.Fatalf("parsing the effective configuration: %v\n%s", err, out)
		}
		for _, w := range c.Ignored {
			if w.Path == "" || w.Value == "" || w.Means == "" {
				t.Fatalf("incomplete warning %+v", w)
			}
		}
		// Ignored keys are not part of the effective configuration, apart from
		// incoming.ignore_localhost, which is kept and warned about again.
		c.Ignored, back.Ignored = nil, nil
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip changed the config\n got %+v\nwant %+v\n%s", back, c, out)
		}
	})
}
