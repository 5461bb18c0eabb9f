package config

import (
	"reflect"
	"strings"
	"testing"
)

// Parsing the effective configuration gives back the same Config.
func TestEffectiveRoundTrips(t *testing.T) {
	inputs := map[string]*Config{"Default()": Default()}
	for _, path := range []string{"testdata/full.json", "testdata/full.yaml", "testdata/full.toml",
		"testdata/seed-filter.fixed.json", "testdata/seed-uwu.fixed.json"} {
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		inputs[path] = c
	}
	for _, doc := range []string{
		`{"feature":{"network":false,"env":false}}`,
		`{"feature":{"network":{"outgoing":{"filter":{"remote":"uwu-service","block":[":5432"]}},"dns":{"enabled":false,"filter":{"remote":["a.svc"]}}}}}`,
		`{"feature":{"network":{"incoming":{"mode":"steal","ignore_ports":[9000],"http_filter":{"any_of":[{"header":"^x-a: <b>&"},{"method":"PATCH"}]}}}}}`,
		`{"feature":{"network":{"incoming":{"mode":"steal","http_filter":{"path_filter":"^/api/\\d+$"}}}}}`,
		`{"feature":{"env":{"exclude":"SECRET_*;TOKEN"}}}`,
		`{"feature":{"env":{"exclude":"","override":{"A":"1"}}}}`,
		`{"target":"targetless","agent":{"address":"[::1]:7777"}}`,
	} {
		inputs[doc] = mustParse(t, doc, JSON)
	}
	for name, c := range inputs {
		out, err := c.Effective()
		if err != nil {
			t.Fatalf("%s: Effective: %v", name, err)
		}
		back, err := Parse(out, JSON)
		if err != nil {
			t.Fatalf("%s: parsing the effective configuration: %v\n%s", name, err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Errorf("%s: round trip changed the config\n got %+v\nwant %+v\n%s", name, back, c, out)
		}
	}
}

func TestEffectiveUsesMirrordNames(t *testing.T) {
	c := mustParse(t, `{"target":"pod/uwu-app","feature":{"network":{"incoming":"steal","outgoing":{"filter":{"local":[":8888"]}}}}}`, JSON)
	out, err := c.Effective()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"path": "pod/uwu-app"`, `"namespace": null`, `"ttl": 1`, `"startup_timeout": 60`,
		`"communication_timeout": 30`, `"mode": "steal"`, `"local": [":8888"]`, `"ignore_localhost": false`,
		`"enabled": true`, `"env": true`, `"kube_context": null`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("effective configuration lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), `\u003c`) {
		t.Errorf("effective configuration escapes HTML:\n%s", out)
	}
}
