package config

import (
	"strings"
	"testing"
)

// Every error class, in every format the case can be written in: the messages are identical
// because each names the key path, not a position in the file.
func TestErrorsNameThePathAndWhatIsValid(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want string // the whole error text, one problem a line
	}{
		// Unknown keys.
		{"typo", `{"feature":{"network":{"outgoin":{}}}}`,
			`feature.network.outgoin: unknown key; did you mean "outgoing"?`},
		{"transposition", `{"feature":{"network":{"outgoing":{"fitler":{"local":["a"]}}}}}`,
			`feature.network.outgoing.fitler: unknown key; did you mean "filter"?`},
		{"camelCase", `{"feature":{"network":{"outgoing":{"ignoreLocalhost":true}}}}`,
			`feature.network.outgoing.ignoreLocalhost: unknown key; did you mean "ignore_localhost"?`},
		{"dash for underscore", `{"agent":{"startup-timeout":5}}`,
			`agent.startup-timeout: unknown key; did you mean "startup_timeout"?`},
		{"capitals", `{"Feature":{}}`, `Feature: unknown key; did you mean "feature"?`},
		{"nothing close", `{"feature":{"network":{"zzz":1}}}`,
			`feature.network.zzz: unknown key; valid keys here: "outgoing", "dns", "incoming" and "ipv6"`},
		{"wrong level", `{"network":{"outgoing":false}}`,
			`network: unknown key here; "network" belongs at feature.network`},
		{"wrong level deeper", `{"feature":{"outgoing":false}}`,
			`feature.outgoing: unknown key here; "outgoing" belongs at feature.network.outgoing`},
		{"unknown key inside a list", `{"feature":{"network":{"incoming":{"http_filter":{"all_of":[{"header":"a"},{"heder":"b"}]}}}}}`,
			`feature.network.incoming.http_filter.all_of[1].heder: unknown key; did you mean "header"?`},

		// Wrong types and values.
		{"incoming mode typo", `{"feature":{"network":{"incoming":"stel"}}}`,
			`feature.network.incoming: "stel" is not a valid mode; valid: "off", "mirror", "steal" or an object; did you mean "steal"?`},
		{"incoming number", `{"feature":{"network":{"incoming":5}}}`,
			`feature.network.incoming: 5 is not a valid mode; valid: "off", "mirror", "steal" or an object`},
		{"mode key", `{"feature":{"network":{"incoming":{"mode":"Steal"}}}}`,
			`feature.network.incoming.mode: "Steal" is not a valid mode; valid: "off", "mirror" or "steal"; did you mean "steal"?`},
		{"outgoing string", `{"feature":{"network":{"outgoing":"yes"}}}`,
			`feature.network.outgoing: "yes" is not valid; valid: true, false or an object`},
		{"bool as string", `{"feature":{"network":{"outgoing":{"tcp":"true"}}}}`,
			`feature.network.outgoing.tcp: "true" is not valid; valid: true or false`},
		{"port too big", `{"feature":{"network":{"incoming":{"ports":[80,70000]}}}}`,
			`feature.network.incoming.ports[1]: 70000 is not valid; valid: a port number from 1 to 65535`},
		{"port negative", `{"feature":{"network":{"incoming":{"ignore_ports":[-1]}}}}`,
			`feature.network.incoming.ignore_ports[0]: -1 is not valid; valid: a port number from 1 to 65535`},
		{"port zero", `{"feature":{"network":{"incoming":{"ports":[0]}}}}`,
			`feature.network.incoming.ports[0]: 0 is not a port; valid: 1 to 65535`},
		{"port fraction", `{"feature":{"network":{"incoming":{"http_filter":{"path_filter":"^/","ports":[80.5]}}}}}`,
			`feature.network.incoming.http_filter.ports[0]: 80.5 is not a whole number; valid: a port number from 1 to 65535`},
		{"port as string", `{"feature":{"network":{"incoming":{"ports":["80"]}}}}`,
			`feature.network.incoming.ports[0]: "80" is not valid; valid: a port number from 1 to 65535`},
		{"port pair", `{"feature":{"network":{"incoming":{"port_mapping":[[9333,80,1]]}}}}`,
			`feature.network.incoming.port_mapping[0]: a list of 3 values is not valid; valid: a pair [local, remote] such as [9333, 80]`},
		{"port pair zero", `{"feature":{"network":{"incoming":{"port_mapping":[[9333,0]]}}}}`,
			`feature.network.incoming.port_mapping[0][1]: 0 is not a port; valid: 1 to 65535`},
		{"ttl too big", `{"agent":{"ttl":70000}}`,
			`agent.ttl: 70000 is not valid; valid: a number of seconds from 0 to 65535`},
		{"timeout as string", `{"agent":{"startup_timeout":"60s"}}`,
			`agent.startup_timeout: "60s" is not valid; valid: a number of seconds`},
		{"bare port in filter", `{"feature":{"network":{"outgoing":{"filter":{"local":[8888]}}}}}`,
			`feature.network.outgoing.filter.local[0]: 8888 is not valid; valid: a filter entry string; did you mean ":8888" (any host, port 8888)?`},
		{"filter not an object", `{"feature":{"network":{"outgoing":{"filter":["app-db"]}}}}`,
			`feature.network.outgoing.filter: a list is not valid; valid: an object with "local" or "remote" (and, ours, "block")`},
		{"env override value", `{"feature":{"env":{"override":{"PORT":8080}}}}`,
			`feature.env.override.PORT: 8080 is not valid; valid: a string`},
		{"env as string", `{"feature":{"env":"yes"}}`,
			`feature.env: "yes" is not valid; valid: true, false or an object`},
		{"target number", `{"target":7}`,
			`target: 7 is not valid; valid: a target path such as "pod/NAME" or "deployment/NAME/container/C", or an object with "path" and "namespace"`},
		{"two targets", `{"target":{"pod":"a","deployment":"b"}}`,
			`target: names more than one target ("pod" and "deployment"); give one`},
		{"target struct with namespace", `{"target":{"pod":"a","namespace":"x"}}`,
			`target: mixes the path's object form with "namespace"; write {"path": {"pod": ...}, "namespace": ...}`},
		{"pull secrets as strings", `{"agent":{"image_pull_secrets":["regcred"]}}`,
			`agent.image_pull_secrets[0]: "regcred" is not valid; valid: an object {"name": SECRET}`},
		{"pull secret without a name", `{"agent":{"image_pull_secrets":[{}]}}`,
			`agent.image_pull_secrets[0]: needs "name": the Secret's name`},
		{"pull secret name", `{"agent":{"image_pull_secrets":[{"name":"Reg_Cred"}]}}`,
			`agent.image_pull_secrets[0].name: "Reg_Cred" is not a valid Secret name; valid: lowercase letters, digits, '-' and '.', up to 253`},
		{"pull secrets of an ephemeral agent", `{"agent":{"ephemeral":true,"image_pull_secrets":[{"name":"regcred"}]}}`,
			`agent.image_pull_secrets: cannot apply to an ephemeral agent, which pulls its image with the target pod's own secrets: add the Secret to the target's workload (imagePullSecrets), or leave agent.ephemeral false`},
		{"image tag alone", `{"agent":{"image":{"tag":"v1"}}}`,
			`agent.image: needs "registry": trafficpolice's agent image is not mirrord's, so a tag alone names no image`},
		{"template", `{"target":"{{ get_env(name=\"TARGET\") }}"}`,
			`target: mirrord's templates ({{ ... }}) are not supported yet by trafficpolice; write the value literally`},
		{"typographic quotes in a value", `{"target":"“pod/uwu-app”"}`,
			`target: "“pod/uwu-app”" is wrapped in typographic quotes “ ”; use straight quotes "`},

		// Values that do not fit together, or are out of range (Validate).
		{"local and remote", `{"feature":{"network":{"outgoing":{"filter":{"local":["a"],"remote":["b"]}}}}}`,
			`feature.network.outgoing.filter: "local" and "remote" cannot be used together: "local" sends what matches local and the rest remote, "remote" the opposite; pick one; ours, "block", may stand beside either`},
		{"dns local and remote", `{"feature":{"network":{"dns":{"filter":{"local":"a","remote":"b"}}}}}`,
			`feature.network.dns.filter: "local" and "remote" cannot be used together: "local" sends what matches local and the rest remote, "remote" the opposite; pick one`},
		{"empty filter list", `{"feature":{"network":{"outgoing":{"filter":{"local":[]}}}}}`,
			`feature.network.outgoing.filter.local: empty list; list at least one entry or remove the key`},
		{"empty filter entry", `{"feature":{"network":{"outgoing":{"filter":{"block":["a"," "]}}}}}`,
			`feature.network.outgoing.filter.block[1]: empty entry`},
		{"empty filter", `{"feature":{"network":{"outgoing":{"filter":{}}}}}`,
			`feature.network.outgoing.filter: is empty; give "local" or "remote" (and, ours, "block"), or remove the key`},
		{"unknown target kind", `{"target":"pood/uwu-app"}`,
			`target.path: "pood/uwu-app" has an unknown kind "pood"; valid kinds: "pod", "deployment", "statefulset", "replicaset", "job" or "service" (or "targetless"); did you mean "pod"?`},
		{"target without kind", `{"target":"uwu-app"}`,
			`target.path: "uwu-app" has no kind; valid: "targetless" or KIND/NAME[/container/CONTAINER] with KIND one of "pod", "deployment", "statefulset", "replicaset", "job" or "service", such as "pod/uwu-app"`},
		{"target without name", `{"target":"pod/"}`, `target.path: "pod/" names no pod; valid: pod/NAME`},
		{"target bad container part", `{"target":"pod/a/b"}`,
			`target.path: "pod/a/b" is not valid; valid: pod/NAME or pod/NAME/container/CONTAINER`},
		{"target bad name", `{"target":"pod/Uwu_App"}`,
			`target.path: "Uwu_App" is not a valid Kubernetes name; valid: lowercase letters, digits, '-' and '.'`},
		{"target cronjob", `{"target":"cronjob/nightly"}`,
			`target.path: not supported yet by trafficpolice (mirrord runs cronjob targets only through its operator's copy_target; target one of its pods with "pod/NAME")`},
		{"target namespace", `{"target":{"path":"pod/a","namespace":"Prod NS"}}`,
			`target.namespace: "Prod NS" is not a valid namespace; valid: up to 63 lowercase letters, digits and '-'`},
		{"agent address", `{"agent":{"address":"localhost"}}`,
			`agent.address: "localhost" is not valid; valid: HOST:PORT such as "127.0.0.1:7777", "agent.example:7777" or "[::1]:7777"`},
		{"agent address without host", `{"agent":{"address":":7777"}}`,
			`agent.address: ":7777" is not valid; valid: HOST:PORT such as "127.0.0.1:7777", "agent.example:7777" or "[::1]:7777"`},
		{"agent fingerprint truncated", `{"agent":{"fingerprint":"sha256:47DEQpj8HBSa"}}`,
			`agent.fingerprint: "sha256:47DEQpj8HBSa" is not valid; valid: "sha256:" and 43 base64 characters, as "trafficpolice agent fingerprint --tls-key FILE" prints on the agent's host`},
		{"bad regex", `{"feature":{"network":{"incoming":{"http_filter":{"header_filter":"x-user: (alice"}}}}}`,
			"feature.network.incoming.http_filter.header_filter: \"x-user: (alice\" is not a valid regular expression: missing closing ): `x-user: (alice`"},
		{"look-around", `{"feature":{"network":{"incoming":{"http_filter":{"header_filter":"^User-Agent: (?!kube-probe)"}}}}}`,
			`feature.network.incoming.http_filter.header_filter: "^User-Agent: (?!kube-probe)" uses look-around ((?!...), which trafficpolice does not support yet: its regular expressions are Go's (RE2) syntax`},
		{"bad inner regex", `{"feature":{"network":{"incoming":{"http_filter":{"any_of":[{"path":"["}]}}}}}`,
			"feature.network.incoming.http_filter.any_of[0].path: \"[\" is not a valid regular expression: missing closing ]: `[`"},
		{"two http filters", `{"feature":{"network":{"incoming":{"http_filter":{"header_filter":"a","path_filter":"b"}}}}}`,
			`feature.network.incoming.http_filter: sets "header_filter" and "path_filter" together; set one, or combine filters with all_of or any_of`},
		{"inner filter with two", `{"feature":{"network":{"incoming":{"http_filter":{"all_of":[{"header":"a","path":"b"}]}}}}}`,
			`feature.network.incoming.http_filter.all_of[0]: sets "header" and "path" together; an inner filter sets one`},
		{"empty all_of", `{"feature":{"network":{"incoming":{"http_filter":{"all_of":[]}}}}}`,
			`feature.network.incoming.http_filter.all_of: empty list; list at least one filter`},
		{"ports without filter", `{"feature":{"network":{"incoming":{"http_filter":{"ports":[80]}}}}}`,
			`feature.network.incoming.http_filter: sets no filter; set one of header_filter, path_filter, method_filter, all_of or any_of, or remove http_filter`},
		{"method", `{"feature":{"network":{"incoming":{"http_filter":{"method_filter":"GE T"}}}}}`,
			`feature.network.incoming.http_filter.method_filter: "GE T" is not an HTTP method name such as "GET" or "POST"`},
		{"ports and ignore_ports", `{"feature":{"network":{"incoming":{"ports":[80],"ignore_ports":[81]}}}}`,
			`feature.network.incoming: "ports" and "ignore_ports" cannot be used together; list the ports to take, or the ports to leave alone`},
		{"empty ports", `{"feature":{"network":{"incoming":{"ports":[]}}}}`,
			`feature.network.incoming.ports: empty list; remove the key to take every port the app listens on, or list ports`},
		{"include and exclude", `{"feature":{"env":{"include":"A","exclude":"B"}}}`,
			`feature.env: "include" and "exclude" cannot be used together; list the variables to take, or the ones to leave out`},

		// mirrord keys that trafficpolice does not honour and that would change where traffic goes.
		{"skip_processes", `{"skip_processes":"ide-debugger"}`,
			`skip_processes: not supported yet by trafficpolice (every process the command starts shares the sandbox's network, so these processes' traffic would be routed instead of staying local; start them outside trafficpolice)`},
		{"unix_streams", `{"feature":{"network":{"outgoing":{"unix_streams":"bear.+"}}}}`,
			`feature.network.outgoing.unix_streams: not supported yet by trafficpolice (the app's unix socket connections would reach the host's sockets instead of the pod's; remove the key)`},
		{"db_branches", `{"feature":{"db_branches":[{"type":"pg","connection":{"url":{"type":"env","variable":"DB_URL"}}}]}}`,
			`feature.db_branches: not supported yet by trafficpolice (database branches need mirrord's operator, and without one the app's database traffic would reach the database the branch stands in for; point the app at a database of its own (feature.env.override) and remove the key)`},
		{"split_queues", `{"feature":{"split_queues":{"orders":{"queue_type":"SQS","message_filter":{"x":"y"}}}}}`,
			`feature.split_queues: not supported yet by trafficpolice (queue splitting needs mirrord's operator, and without one the app would take messages meant for the pod's app; remove the key)`},
		{"profile", `{"profile":"team-a"}`,
			`profile: not supported yet by trafficpolice (mirrord profiles live in the cluster and may change the network features, which trafficpolice cannot read; copy the profile's settings into this file and remove the key)`},
		{"connect_tcp", `{"connect_tcp":"10.0.0.1:7777"}`,
			`connect_tcp: not supported yet by trafficpolice (it names a mirrord agent, which trafficpolice cannot talk to, and without it the run would start an agent of its own or have none; give a trafficpolice agent's HOST:PORT in agent.address)`},
		{"target by labels", `{"target":{"path":{"labels":{"app":"api"}}}}`,
			`target.path.labels: not supported yet by trafficpolice (selecting pods by labels is not supported yet; target a pod or a workload, such as "deployment/NAME")`},
		{"target rollout", `{"target":"rollout/web"}`,
			`target.path: not supported yet by trafficpolice (Argo rollouts are not resolved yet; target one of its pods with "pod/NAME" or its replica set with "replicaset/NAME")`},
		{"target rollout object", `{"target":{"rollout":"web"}}`,
			`target.path: not supported yet by trafficpolice (Argo rollouts are not resolved yet; target one of its pods with "pod/NAME" or its replica set with "replicaset/NAME")`},
		{"port mapped twice", `{"feature":{"network":{"incoming":{"port_mapping":[[9333,80],[9333,81]]}}}}`,
			`feature.network.incoming.port_mapping[1]: maps local port 9333 again (first mapped to 80); give each local port one remote port`},
		{"body filter", `{"feature":{"network":{"incoming":{"http_filter":{"all_of":[{"body":"json","query":"$.a","matches":"x"}]}}}}}`,
			"feature.network.incoming.http_filter.all_of[0].body: not supported yet by trafficpolice (" + whyBodyJQ + ")\n" +
				"feature.network.incoming.http_filter.all_of[0].matches: not supported yet by trafficpolice (" + whyBodyJQ + ")\n" +
				"feature.network.incoming.http_filter.all_of[0].query: not supported yet by trafficpolice (" + whyBodyJQ + ")"},
		{"header jq filter", `{"feature":{"network":{"incoming":{"http_filter":{"header_filter_jq":".x == 1"}}}}}`,
			"feature.network.incoming.http_filter.header_filter_jq: not supported yet by trafficpolice (" + whyBodyJQ + ")"},
		// Ignored keys still have mirrord's types.
		{"ignored key of the wrong type", `{"feature":{"fs":"READ"}}`,
			`feature.fs: "READ" is not valid; valid: true, false, "local", "localwithoverrides", "read", "write" or an object`},
		{"ignored list of the wrong type", `{"agent":{"disabled_capabilities":"NET_RAW"}}`,
			`agent.disabled_capabilities: "NET_RAW" is not valid; valid: a list of strings`},
		{"noop with wrong type", `{"agent":{"log_level":3}}`, `agent.log_level: 3 is not valid; valid: a string`},

		// Several problems at once, in key-path order whatever the file's order.
		{"several", `{"feature":{"network":{"outgoin":false,"dns":"no"}},"agent":{"ttl":-1}}`,
			"agent.ttl: -1 is not valid; valid: a number of seconds from 0 to 65535\n" +
				"feature.network.dns: \"no\" is not valid; valid: true, false or an object\n" +
				"feature.network.outgoin: unknown key; did you mean \"outgoing\"?"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for format, data := range sameInFormats(t, tc.doc) {
				_, err := Parse(data, format)
				if err == nil {
					t.Fatalf("%s: Parse succeeded, want error %q\n%s", format, tc.want, data)
				}
				if got := err.Error(); got != tc.want {
					t.Errorf("%s:\n got %s\nwant %s\n%s", format, got, tc.want, data)
				}
			}
		})
	}
}

func TestTopLevelMustBeAnObject(t *testing.T) {
	for _, tc := range []struct {
		data   string
		format Format
	}{{`[]`, JSON}, {`"pod/a"`, JSON}, {"- a\n- b\n", YAML}, {"just words", YAML}} {
		_, err := Parse([]byte(tc.data), tc.format)
		if err == nil || !strings.Contains(err.Error(), "it must be an object of keys") {
			t.Errorf("Parse(%q, %s) = %v, want a complaint about the top level", tc.data, tc.format, err)
		}
	}
}

func TestDuplicateKeys(t *testing.T) {
	data := "{\n  \"target\": \"pod/a\",\n  \"target\": \"pod/b\"\n}"
	_, err := Parse([]byte(data), JSON)
	want := `3:3: target: duplicate key; each key may appear once in an object`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	_, err = Parse([]byte("target: pod/a\ntarget: pod/b\n"), YAML)
	if err == nil || !strings.Contains(err.Error(), `3`) && !strings.Contains(err.Error(), "already defined") {
		t.Errorf("YAML duplicate: got %v", err)
	}
	_, err = Parse([]byte("kubeconfig = \"a\"\nkubeconfig = \"b\"\n"), TOML)
	if err == nil || !strings.HasPrefix(err.Error(), "2:") {
		t.Errorf("TOML duplicate: got %v, want an error at line 2", err)
	}
}

func TestValidateCatchesHandMadeConfigs(t *testing.T) {
	c := Default()
	c.Feature.Network.Incoming.Mode = "copy"
	c.Feature.Network.Incoming.Ports = []uint16{0}
	c.Agent.TTL = -5
	c.Feature.Env.Enabled = false
	c.Feature.Env.Override = map[string]string{"A=B": "c"}
	c.Feature.Network.Incoming.HTTPFilter = &HTTPFilter{AllOf: []HTTPFilter{{AnyOf: []HTTPFilter{{PathFilter: "x"}}}}}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken config")
	}
	want := []string{
		"agent.ttl: -5 is not valid; valid: a whole number from 0 to 65535",
		"feature.env: include, exclude or override is set but env is off; turn env on or drop them",
		`feature.env.override.A=B: "A=B" is not a valid environment variable name`,
		"feature.network.incoming.http_filter.all_of[0]: all_of, any_of and ports cannot be nested; an inner filter sets one of \"header\", \"path\" or \"method\"",
		`feature.network.incoming.mode: "copy" is not a valid mode; valid: "off", "mirror" or "steal"`,
		"feature.network.incoming.ports[0]: 0 is not a port; valid: 1 to 65535",
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
	if _, err := c.Effective(); err == nil {
		t.Error("Effective printed an invalid config")
	}
}

func TestLoadErrorsStartWithThePath(t *testing.T) {
	_, err := Load("testdata/does-not-exist.json")
	if err == nil || !strings.HasPrefix(err.Error(), "testdata/does-not-exist.json: cannot open") {
		t.Errorf("got %v", err)
	}
	_, err = Load("testdata/bad-key.yaml")
	want := `testdata/bad-key.yaml: feature.network.outgoing.filter.locl: unknown key; did you mean "local"?`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// mirrord keys that trafficpolice does not honour but can run without: the file loads, with
// one warning per key that says what the run does instead; Strict refuses them.
func TestIgnoredKeysLoadWithAWarningEach(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string // Ignored.String() of each, in key-path order
	}{
		{"fs read", `{"feature":{"fs":"read"}}`,
			[]string{`feature.fs "read": ignored — the app reads the local file system`}},
		{"fs true", `{"feature":{"fs":true}}`,
			[]string{`feature.fs true: ignored — the app reads the local file system`}},
		{"fs write object", `{"feature":{"fs":{"mode":"write","read_only":[".+\\.yaml"]}}}`,
			[]string{`feature.fs {"mode":"write","read_only":[".+\\.yaml"]}: ignored — the app reads and writes the local file system, not the pod's`}},
		{"fs localwithoverrides", `{"feature":{"fs":"localwithoverrides"}}`,
			[]string{`feature.fs "localwithoverrides": ignored — the app uses the local file system; no path is read from the pod`}},
		{"hostname", `{"feature":{"hostname":true}}`,
			[]string{`feature.hostname true: ignored — the app sees the host's hostname, not the pod's`}},
		{"operator and copy_target", `{"operator":true,"feature":{"copy_target":{"scale_down":true}}}`,
			[]string{
				`feature.copy_target {"scale_down":true}: ignored — the agent joins the target pod itself, not a copy, and nothing is scaled down`,
				`operator true: ignored — trafficpolice uses no operator: it starts its own agent`,
			}},
		{"agent pod spec", `{"agent":{"tolerations":[{"operator":"Exists"}],"labels":{"team":"a"},"resources":{"limits":{"cpu":"1"}}}}`,
			[]string{
				`agent.labels {"team":"a"}: ignored — the agent's pod gets trafficpolice's defaults`,
				`agent.resources {"limits":{"cpu":"1"}}: ignored — the agent's pod gets trafficpolice's defaults`,
				`agent.tolerations [{"operator":"Exists"}]: ignored — the agent's pod gets trafficpolice's defaults`,
			}},
		{"env file", `{"feature":{"env":{"env_file":".env","unset":["A"]}}}`,
			[]string{
				`feature.env.env_file ".env": ignored — the file's variables are not set for the app`,
				`feature.env.unset ["A"]: ignored — these variables stay set for the app`,
			}},
		{"tls delivery", `{"feature":{"network":{"incoming":{"mode":"steal","https_delivery":{"protocol":"tcp"}}}}}`,
			[]string{`feature.network.incoming.https_delivery {"protocol":"tcp"}: ignored — stolen TLS connections reach the app as they arrived: TLS passes through`}},
		{"listen_ports", `{"feature":{"network":{"incoming":{"listen_ports":[[80,4480]]}}}}`,
			[]string{`feature.network.incoming.listen_ports [[80,4480]]: ignored — the app listens on its own port numbers in its own network namespace, where they never clash with the host's`}},
		{"long value shortened", `{"agent":{"annotations":{"example.com/a-rather-long-annotation-name":"and-its-long-value"}}}`,
			[]string{`agent.annotations {"example.com/a-rather-long-annotation-name":"a…: ignored — the agent's pod gets trafficpolice's defaults`}},
		{"what trafficpolice does anyway", `{"feature":{"fs":"local","hostname":false},"operator":false,"accept_invalid_certificates":false}`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for format, data := range sameInFormats(t, tc.doc) {
				c, err := Parse(data, format)
				if err != nil {
					t.Fatalf("%s: %v\n%s", format, err, data)
				}
				var got []string
				for _, w := range c.Ignored {
					got = append(got, w.String())
				}
				if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
					t.Errorf("%s:\n got %q\nwant %q", format, got, tc.want)
				}
				err = c.Strict()
				if len(tc.want) == 0 {
					if err != nil {
						t.Errorf("%s: Strict refused a file with nothing ignored: %v", format, err)
					}
					continue
				}
				if err == nil || len(problems(t, err)) != len(tc.want) || !strings.Contains(err.Error(), "strict mode refuses it") {
					t.Errorf("%s: Strict = %v, want one problem per ignored key", format, err)
				}
			}
		})
	}
}
