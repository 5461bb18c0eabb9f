package config

import (
	"reflect"
	"testing"
)

func TestDefaultMatchesMirrord(t *testing.T) {
	c := Default()
	nw := c.Feature.Network
	checks := []struct {
		name      string
		got, want any
	}{
		{"outgoing.tcp", nw.Outgoing.TCP, true},
		{"outgoing.udp", nw.Outgoing.UDP, true},
		{"outgoing.ignore_localhost", nw.Outgoing.IgnoreLocalhost, false},
		{"dns.enabled", nw.DNS.Enabled, true},
		{"incoming.mode", nw.Incoming.Mode, "mirror"},
		{"ipv6", nw.IPv6, false},
		{"env.enabled", c.Feature.Env.Enabled, true},
		{"agent.ttl", c.Agent.TTL, 1},
		{"agent.startup_timeout", c.Agent.StartupTimeout, 60},
		{"agent.communication_timeout", c.Agent.CommunicationTimeout, 30},
		{"agent.ephemeral", c.Agent.Ephemeral, false},
		{"target.path", c.Target.Path, ""},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default() does not validate: %v", err)
	}
}

func TestEmptyConfigurationIsDefault(t *testing.T) {
	for _, tc := range []struct {
		format Format
		data   string
	}{{JSON, "{}"}, {JSON, "null"}, {YAML, ""}, {YAML, "# nothing\n"}, {YAML, "{}"}, {TOML, ""}} {
		c := mustParse(t, tc.data, tc.format)
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("Parse(%q, %s) = %+v, want Default()", tc.data, tc.format, c)
		}
	}
}

func TestFormatForPath(t *testing.T) {
	for path, want := range map[string]Format{
		"config.json": JSON, "mirrord.JSON": JSON, ".mirrord/mirrord.yaml": YAML, "a.yml": YAML,
		"a.YML": YAML, "x.toml": TOML, "config": JSON, "config.json5": JSON, "dir.toml/file": JSON,
	} {
		if got := FormatForPath(path); got != want {
			t.Errorf("FormatForPath(%q) = %s, want %s", path, got, want)
		}
	}
}

func TestTargetAccessors(t *testing.T) {
	for _, tc := range []struct{ path, kind, name, container string }{
		{"", "", "", ""},
		{"targetless", "targetless", "", ""},
		{"pod/uwu-app", "pod", "uwu-app", ""},
		{"deploy/api", "deployment", "api", ""},
		{"deployment/api/container/main", "deployment", "api", "main"},
		{"statefulset/db/container/pg", "statefulset", "db", "pg"},
	} {
		tg := Target{Path: tc.path}
		if tg.Kind() != tc.kind || tg.Name() != tc.name || tg.Container() != tc.container {
			t.Errorf("Target{%q}: Kind %q Name %q Container %q, want %q %q %q",
				tc.path, tg.Kind(), tg.Name(), tg.Container(), tc.kind, tc.name, tc.container)
		}
	}
}

// The same configuration in JSON, YAML and TOML decodes to the same Config.
func TestFullConfigurationSameInEveryFormat(t *testing.T) {
	want, err := Load("testdata/full.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"testdata/full.yaml", "testdata/full.toml"} {
		got, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", path, got, want)
		}
	}
	// And it holds what full.json says.
	exp := Default()
	exp.Target = Target{Path: "deployment/uwu-app/container/app", Namespace: "uwu"}
	exp.Agent = Agent{Namespace: "tp-agents", Image: "registry.example/trafficpolice-agent:v1", TTL: 5,
		Ephemeral: true, StartupTimeout: 120, CommunicationTimeout: 45, Address: "127.0.0.1:7777"}
	nw := &exp.Feature.Network
	nw.Outgoing = Outgoing{TCP: true, UDP: false, IgnoreLocalhost: true, Filter: OutgoingFilter{
		Local: []string{"app-db", ":8888", "tcp://10.1.0.0/16:5432", "udp://:53"},
		Block: []string{"prod-db.internal"},
	}}
	nw.DNS = DNS{Enabled: true, Filter: DNSFilter{Local: []string{"mylocal.test"}}}
	nw.Incoming = Incoming{Mode: "steal", Ports: []uint16{9999, 80}, PortMapping: [][2]uint16{{9333, 80}},
		HTTPFilter: &HTTPFilter{
			AllOf: []HTTPFilter{{HeaderFilter: "^x-user: alice$"}, {PathFilter: "^/api"}, {MethodFilter: "POST"}},
			Ports: []uint16{80},
		}}
	nw.IPv6 = true
	exp.Feature.Env = Env{Enabled: true, Include: []string{"DATABASE_*", "PUBLIC_ENV"},
		Override: map[string]string{"LOG_LEVEL": "debug", "REGION": "local"}}
	exp.Kubeconfig, exp.KubeContext = "~/.kube/uwu", "uwu-cluster"
	if !reflect.DeepEqual(want, exp) {
		t.Errorf("full.json:\n got %+v\nwant %+v", want, exp)
	}
}

func TestShorthandForms(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want func(c *Config)
	}{
		{"outgoing false", `{"feature":{"network":{"outgoing":false}}}`,
			func(c *Config) { c.Feature.Network.Outgoing.TCP, c.Feature.Network.Outgoing.UDP = false, false }},
		{"outgoing true", `{"feature":{"network":{"outgoing":true}}}`, func(c *Config) {}},
		{"incoming steal", `{"feature":{"network":{"incoming":"steal"}}}`,
			func(c *Config) { c.Feature.Network.Incoming.Mode = "steal" }},
		{"incoming off", `{"feature":{"network":{"incoming":"off"}}}`,
			func(c *Config) { c.Feature.Network.Incoming.Mode = "off" }},
		{"incoming false", `{"feature":{"network":{"incoming":false}}}`,
			func(c *Config) { c.Feature.Network.Incoming.Mode = "off" }},
		{"incoming true", `{"feature":{"network":{"incoming":true}}}`, func(c *Config) {}},
		{"incoming object", `{"feature":{"network":{"incoming":{"mode":"steal","ignore_ports":[9000],"ignore_localhost":true}}}}`,
			func(c *Config) {
				c.Feature.Network.Incoming = Incoming{Mode: "steal", IgnorePorts: []uint16{9000}, IgnoreLocalhost: true}
				c.Ignored = []Ignored{{Path: "feature.network.incoming.ignore_localhost", Value: "true",
					Means: "ports the app listens on only on loopback are stolen or mirrored too"}}
			}},
		{"empty ignore_ports", `{"feature":{"network":{"incoming":{"ignore_ports":[],"port_mapping":[]}}}}`, func(c *Config) {}},
		{"dns false", `{"feature":{"network":{"dns":false}}}`,
			func(c *Config) { c.Feature.Network.DNS.Enabled = false }},
		{"dns true", `{"feature":{"network":{"dns":true}}}`, func(c *Config) {}},
		{"dns filter single string", `{"feature":{"network":{"dns":{"filter":{"remote":"uwu-service"}}}}}`,
			func(c *Config) { c.Feature.Network.DNS.Filter.Remote = []string{"uwu-service"} }},
		{"env false", `{"feature":{"env":false}}`, func(c *Config) { c.Feature.Env.Enabled = false }},
		{"env true", `{"feature":{"env":true}}`, func(c *Config) {}},
		{"env include string", `{"feature":{"env":{"include":"A;B*; C ;"}}}`,
			func(c *Config) { c.Feature.Env.Include = []string{"A", "B*", "C"} }},
		{"env exclude list", `{"feature":{"env":{"exclude":["SECRET_*","TOKEN"]}}}`,
			func(c *Config) { c.Feature.Env.Exclude = []string{"SECRET_*", "TOKEN"} }},
		{"network false", `{"feature":{"network":false}}`, func(c *Config) {
			nw := &c.Feature.Network
			nw.Outgoing.TCP, nw.Outgoing.UDP, nw.DNS.Enabled, nw.Incoming.Mode = false, false, false, "off"
		}},
		{"local single string", `{"feature":{"network":{"outgoing":{"filter":{"local":"app-db"}}}}}`,
			func(c *Config) { c.Feature.Network.Outgoing.Filter.Local = []string{"app-db"} }},
		{"block alone", `{"feature":{"network":{"outgoing":{"filter":{"block":"prod-db"}}}}}`,
			func(c *Config) { c.Feature.Network.Outgoing.Filter.Block = []string{"prod-db"} }},
		{"remote and block", `{"feature":{"network":{"outgoing":{"filter":{"remote":["uwu-service"],"block":[":5432"]}}}}}`,
			func(c *Config) {
				c.Feature.Network.Outgoing.Filter = OutgoingFilter{Remote: []string{"uwu-service"}, Block: []string{":5432"}}
			}},
		{"target string", `{"target":"pod/uwu-app"}`, func(c *Config) { c.Target.Path = "pod/uwu-app" }},
		{"target targetless", `{"target":"targetless"}`, func(c *Config) { c.Target.Path = "targetless" }},
		{"target object", `{"target":{"path":"deployment/api","namespace":"prod"}}`,
			func(c *Config) { c.Target = Target{Path: "deployment/api", Namespace: "prod"} }},
		{"target path object", `{"target":{"path":{"pod":"uwu-app","container":"app"}}}`,
			func(c *Config) { c.Target.Path = "pod/uwu-app/container/app" }},
		{"target struct form", `{"target":{"stateful_set":"db"}}`,
			func(c *Config) { c.Target.Path = "statefulset/db" }},
		{"agent image object", `{"agent":{"image":{"registry":"reg.example/agent","tag":"v2"}}}`,
			func(c *Config) { c.Agent.Image = "reg.example/agent:v2" }},
		{"agent image registry only", `{"agent":{"image":{"registry":"reg.example/agent"}}}`,
			func(c *Config) { c.Agent.Image = "reg.example/agent" }},
		{"agent address", `{"agent":{"address":"[::1]:7777"}}`, func(c *Config) { c.Agent.Address = "[::1]:7777" }},
		{"agent image pull secrets", `{"agent":{"image_pull_secrets":[{"name":"regcred"},{"name":"corp.pull"}]}}`,
			func(c *Config) { c.Agent.ImagePullSecrets = []string{"regcred", "corp.pull"} }},
		{"agent fingerprint", `{"agent":{"fingerprint":"sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}}`,
			func(c *Config) { c.Agent.Fingerprint = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU" }},
		{"whole number written as float", `{"agent":{"ttl":30.0}}`, func(c *Config) { c.Agent.TTL = 30 }},
		{"http filter single port", `{"feature":{"network":{"incoming":{"mode":"steal","http_filter":{"header_filter":"^x-user: alice$","ports":8080}}}}}`,
			func(c *Config) {
				c.Feature.Network.Incoming.Mode = "steal"
				c.Feature.Network.Incoming.HTTPFilter = &HTTPFilter{HeaderFilter: "^x-user: alice$", Ports: []uint16{8080}}
			}},
		{"http filter false", `{"feature":{"network":{"incoming":{"http_filter":false}}}}`, func(c *Config) {}},
		{"http filter empty object", `{"feature":{"network":{"incoming":{"http_filter":{}}}}}`, func(c *Config) {}},
		{"any_of", `{"feature":{"network":{"incoming":{"http_filter":{"any_of":[{"path":"^/a"},{"method":"get"}]}}}}}`,
			func(c *Config) {
				c.Feature.Network.Incoming.HTTPFilter = &HTTPFilter{AnyOf: []HTTPFilter{{PathFilter: "^/a"}, {MethodFilter: "get"}}}
			}},
		{"kube keys", `{"kubeconfig":"~/k","kube_context":"kind-a"}`,
			func(c *Config) { c.Kubeconfig, c.KubeContext = "~/k", "kind-a" }},
		{"null means unset", `{"target":null,"agent":{"ttl":null},"feature":{"network":{"outgoing":null}}}`, func(c *Config) {}},
		// mirrord keys whose value matches what trafficpolice does anyway are accepted.
		{"fs local", `{"feature":{"fs":"local"}}`, func(c *Config) {}},
		{"fs false", `{"feature":{"fs":false}}`, func(c *Config) {}},
		{"fs mode local", `{"feature":{"fs":{"mode":"local","local":[".+\\.js"]}}}`, func(c *Config) {}},
		{"hostname false", `{"feature":{"hostname":false}}`, func(c *Config) {}},
		{"copy_target off", `{"feature":{"copy_target":{"enabled":false}}}`, func(c *Config) {}},
		{"magic aws off", `{"feature":{"magic":{"aws":false}}}`, func(c *Config) {}},
		{"operator false", `{"operator":false}`, func(c *Config) {}},
		{"mirrord's defaults restated", `{"use_proxy":true,"agent":{"external_ip_fix":true},"skip_build_tools":false,"pause":false}`, func(c *Config) {}},
		{"schema key", `{"$schema":"./config/schema.json","target":"pod/a"}`, func(c *Config) { c.Target.Path = "pod/a" }},
		{"harmless keys", `{"$schema":"https://example/schema.json","telemetry":true,"sip_binaries":["bash"],"skip_sip":"git",
			"internal_proxy":{"start_idle_timeout":30},"agent":{"log_level":"mirrord=debug","json_log":true,"clean_iptables_on_start":true},
			"feature":{"env":{"load_from_process":true},"network":{"incoming":{"on_concurrent_steal":"abort"}}}}`,
			func(c *Config) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := Default()
			tc.want(want)
			for format, data := range sameInFormats(t, tc.doc) {
				got := mustParse(t, string(data), format)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s:\n got %+v\nwant %+v\n%s", format, got, want, data)
				}
			}
		})
	}
}
