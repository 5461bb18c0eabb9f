package config

import "math"

// The keys of mirrord's configuration format, and what trafficpolice does with each. This
// table is the one place that says so: the decoder walks it, and the JSON Schema (Schema) is
// written from it.

// fieldKind says what trafficpolice does with a key of mirrord's format.
type fieldKind int

const (
	fSupported fieldKind = iota // honoured: decoded by the section that owns it
	fNoop                       // harmless for trafficpolice: type-checked, then not used
	fIgnored                    // not honoured; the run goes on with a warning (an error with --strict)
	fRefused                    // not honoured, and ignoring it would change where traffic goes: an error
)

// field is one key an object may hold.
type field struct {
	name  string
	kind  fieldKind
	value shape  // the values it takes: the schema's, and the check for keys not decoded by hand
	doc   string // fSupported, fNoop: what the key means, for the schema
	// quiet says the value means what trafficpolice does anyway (fIgnored: no warning;
	// fRefused: no error), such as "operator": false.
	quiet func(*node) bool
	means func(*node) string // fIgnored: what the run does instead, for the warning
	why   string             // fRefused: why, and what to do instead
}

func key(name string, value shape, doc string) field {
	return field{name: name, value: value, doc: doc}
}

func noop(name string, value shape, doc string) field {
	return field{name: name, kind: fNoop, value: value, doc: doc}
}

func ignored(name string, value shape, quiet func(*node) bool, means string) field {
	return ignoredBy(name, value, quiet, func(*node) string { return means })
}

func ignoredBy(name string, value shape, quiet func(*node) bool, means func(*node) string) field {
	return field{name: name, kind: fIgnored, value: value, quiet: quiet, means: means}
}

func refused(name string, value shape, quiet func(*node) bool, why string) field {
	return field{name: name, kind: fRefused, value: value, quiet: quiet, why: why}
}

// Tests for the values that mean what trafficpolice does anyway.
func isFalse(n *node) bool { return n.kind == kBool && !n.b }
func isTrue(n *node) bool  { return n.kind == kBool && n.b }
func never(*node) bool     { return false }

// isEmpty accepts the values that turn a feature off or leave it unset.
func isEmpty(n *node) bool {
	switch n.kind {
	case kNull:
		return true
	case kBool:
		return !n.b
	case kString:
		return n.s == ""
	case kList:
		return len(n.list) == 0
	case kObject:
		for _, v := range n.obj {
			if !isEmpty(v) {
				return false
			}
		}
		return true
	}
	return false
}

// fsLocal accepts the feature.fs values that mean what trafficpolice always does: the app
// uses the local file system.
func fsLocal(n *node) bool {
	switch n.kind {
	case kBool:
		return !n.b
	case kString:
		return n.s == "local"
	case kObject:
		mode, ok := n.obj["mode"]
		if !ok || mode.kind != kString || mode.s != "local" {
			return false
		}
		for k, v := range n.obj {
			switch k {
			case "mode", "local", "readonly_file_buffer":
			default:
				if !isEmpty(v) {
					return false
				}
			}
		}
		return true
	}
	return false
}

// fsMeans says what ignoring a feature.fs value means for the app.
func fsMeans(n *node) string {
	mode := "read" // mirrord's default, and what true means
	switch {
	case n.kind == kString:
		mode = n.s
	case n.kind == kObject && n.obj["mode"] != nil && n.obj["mode"].kind == kString:
		mode = n.obj["mode"].s
	}
	switch mode {
	case "write":
		return "the app reads and writes the local file system, not the pod's"
	case "local", "localwithoverrides":
		return "the app uses the local file system; no path is read from the pod"
	}
	return "the app reads the local file system"
}

// disabledObject accepts false, or an object whose "enabled" (or the given key) is false.
func disabledObject(key string) func(*node) bool {
	return func(n *node) bool {
		if isEmpty(n) {
			return true
		}
		if n.kind != kObject {
			return false
		}
		v, ok := n.obj[key]
		return ok && isFalse(v) && len(n.obj) == 1
	}
}

const (
	meansPodSpec  = "the agent's pod gets trafficpolice's defaults"
	meansLayer    = "mirrord's libc layer switches mean nothing to trafficpolice, which routes at the IP layer"
	meansBodyOnly = "there are no HTTP body or jq filters, so nothing is buffered for them"
	whyBodyJQ     = "HTTP body and jq filters are not supported yet, and stealing requests they do not select would change where traffic goes; filter on header, path or method instead"
	whyOperator   = "it needs the mirrord operator, which trafficpolice does not use; remove the key"
)

const (
	maxSeconds16 = math.MaxUint16
	maxSeconds32 = math.MaxInt32
)

// The keys of each object in mirrord's format, with what trafficpolice does with them.
var (
	rootFields = []field{
		key("target", shape{aString, anObjectOf(targetFields), anObjectOf(targetStructFields)},
			`The pod whose network the app joins: "pod/NAME", "deployment/NAME", "statefulset/NAME", "replicaset/NAME", "job/NAME", "service/NAME" (each optionally followed by "/container/C"), or "targetless"; or {"path": ..., "namespace": ...}.`),
		key("agent", shape{anObjectOf(agentFields)}, "The agent that runs in the target pod's network namespace."),
		key("feature", shape{anObjectOf(featureFields)}, "What the app gets from the cluster."),
		key("kubeconfig", sString, "Path to a kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
		key("kube_context", sString, "The kubeconfig context to use (default: its current context)."),
		noop("$schema", sString, "The JSON Schema this file follows, for editors; not used otherwise."),
		ignored("accept_invalid_certificates", sBool, isFalse, "the cluster's certificate is checked as the kubeconfig says (set insecure-skip-tls-verify there to skip the check)"),
		ignored("operator", sBool, isFalse, "trafficpolice uses no operator: it starts its own agent"),
		ignored("multi_cluster", sBool, isFalse, "the run uses one cluster, the kubeconfig context's"),
		ignored("api", sBool, isFalse, "there is no session monitor API; --flow-log FILE shows where every flow went"),
		noop("baggage", sString, "Only for mirrord's operator; not used."),
		noop("traceparent", sString, "Only for mirrord's operator; not used."),
		ignored("ci", sObject, isEmpty, "`mirrord ci` settings are not used; run `trafficpolice sandbox run` in CI"),
		ignored("container", sObject, isEmpty, "`mirrord container` settings are not used; `trafficpolice sandbox run --image` runs a container"),
		ignored("experimental", sObject, isEmpty, meansLayer),
		noop("internal_proxy", sObject, "Tunes mirrord's proxy processes; trafficpolice has none."),
		noop("external_proxy", sObject, "Tunes mirrord's proxy processes; trafficpolice has none."),
		ignored("key", sString, isEmpty, "trafficpolice has no session keys ({{ key }} templates are refused)"),
		refused("profile", sString, isEmpty, "mirrord profiles live in the cluster and may change the network features, which trafficpolice cannot read; copy the profile's settings into this file and remove the key"),
		noop("sip_binaries", sStrOrList, "macOS only; not used."),
		noop("skip_sip", sStrOrList, "macOS only; not used."),
		ignored("skip_build_tools", sBool, isFalse, "build tools the command runs are sandboxed too: their traffic is routed like the app's"),
		refused("skip_extra_build_tools", sStrOrList, isEmpty, "every process the command starts is sandboxed, so these tools' traffic would be routed like the app's instead of staying local; build first, then run the binary under trafficpolice"),
		refused("skip_processes", sStrOrList, isEmpty, "every process the command starts shares the sandbox's network, so these processes' traffic would be routed instead of staying local; start them outside trafficpolice"),
		ignored("startup_retry", sObject, isEmpty, "Kubernetes API requests are retried with trafficpolice's own settings"),
		noop("telemetry", sBool, "trafficpolice sends no telemetry either way."),
		ignored("use_proxy", sBool, isTrue, "the Kubernetes client still uses HTTP_PROXY/HTTPS_PROXY from the environment (unset them to go direct)"),
		refused("connect_tcp", sString, isEmpty, "it names a mirrord agent, which trafficpolice cannot talk to, and without it the run would start an agent of its own or have none; give a trafficpolice agent's HOST:PORT in agent.address"),
		ignored("pause", sBool, isFalse, "the target container keeps running"),
	}
	targetFields = []field{
		key("path", shape{aString, anObjectOf(targetStructFields)}, `The target: "pod/NAME", "deployment/NAME/container/C", "targetless", or an object such as {"deployment": "api", "container": "main"}.`),
		key("namespace", sString, "The target's namespace (default: the kubeconfig context's)."),
	}
	// targetKindFields are the kinds of mirrord's object form of a target path.
	targetKindFields = []field{
		key("pod", sString, "A pod's name."),
		key("deployment", sString, "A deployment's name: its newest running, ready pod."),
		key("rollout", sString, "An Argo rollout's name (not supported yet: refused)."),
		key("stateful_set", sString, "A stateful set's name: its newest running, ready pod."),
		key("replica_set", sString, "A replica set's name: its newest running, ready pod."),
		key("service", sString, "A service's name: the newest running, ready pod it selects."),
		key("job", sString, "A job's name: its newest running, ready pod."),
		key("cron_job", sString, "A cron job's name (not supported: refused)."),
	}
	targetStructFields = append(append([]field{}, targetKindFields...),
		key("container", sString, "The container whose network and environment the app gets (default: the only one, or the pod's default-container annotation's)."),
		refused("labels", sObject, never, `selecting pods by labels is not supported yet; target a pod or a workload, such as "deployment/NAME"`),
	)
	agentFields = []field{
		key("namespace", sString, "Where a Job-based agent runs (default: the target's namespace)."),
		key("image", shape{aString, anObjectOf(agentImageFields)}, "The agent's image (default: trafficpolice's own), or {\"registry\": ..., \"tag\": ...}."),
		key("image_pull_secrets", shape{alt{t: "array", items: shape{anObjectOf(pullSecretFields)}}}, "Secrets the agent's Job pulls its image with, as [{\"name\": SECRET}] (an ephemeral agent pulls with the target pod's)."),
		key("ttl", shape{aWhole(0, maxSeconds16)}, "Seconds the agent's Job stays after it ends (default 1)."),
		key("ephemeral", sBool, "Run the agent as an ephemeral container in the target pod instead of a Job on its node."),
		key("privileged", sBool, "Run the agent's container privileged."),
		key("startup_timeout", shape{aWhole(0, maxSeconds32)}, "Seconds to wait for the agent to be ready (default 60)."),
		key("communication_timeout", shape{aWhole(0, maxSeconds16)}, "Seconds the agent waits for a lost client, and bound on its requests (default 30)."),
		key("address", sString, "Ours: HOST:PORT of an agent that is already running (a CI sidecar, the test harness); no agent is started then."),
		key("fingerprint", sString, "Ours: the running agent's key fingerprint (sha256:..., as `trafficpolice agent fingerprint` prints it), pinned: the tunnel to agent.address is TLS, and the token goes only to that agent."),
		noop("log_level", sString, "The agent logs at its own level; not used."),
		noop("json_log", sBool, "The agent logs text; not used."),
		ignored("clean_iptables_on_start", sBool, isTrue, "the agent always removes the stale rules of agents that died"),
		ignored("flush_connections", sBool, isFalse, "connections open before a steal stay with the pod's app; new ones are stolen"),
		ignored("inject_headers", sBool, isFalse, "responses carry no Mirrord-Agent header"),
		ignored("override_cache_control", sBool, isFalse, "responses keep their Cache-Control header"),
		ignored("external_ip_fix", sBool, isTrue, "connections passed to the pod's app still go to their original destination address"),
		ignored("http_detection_timeout", sWhole, never, "the agent tells HTTP from other bytes with its own timeout"),
		ignored("exclude_from_mesh", sBool, isFalse, meansPodSpec),
		ignored("disable_mesh_sidecar_injection", sBool, isFalse, meansPodSpec),
		ignored("check_out_of_pods", sBool, isFalse, "the agent starts without checking the node's room for it"),
		ignored("annotations", sObject, isEmpty, meansPodSpec),
		ignored("labels", sObject, isEmpty, meansPodSpec),
		ignored("node_selector", sObject, isEmpty, meansPodSpec),
		ignored("priority_class", sString, isEmpty, meansPodSpec),
		ignored("resources", sObject, isEmpty, meansPodSpec),
		ignored("security_context", sObject, isEmpty, meansPodSpec),
		ignored("service_account", sString, isEmpty, meansPodSpec),
		ignored("tolerations", sList, isEmpty, meansPodSpec),
		ignored("image_pull_policy", sString, isEmpty, meansPodSpec),
		ignored("disabled_capabilities", shape{aStrings}, isEmpty, "the agent's container gets trafficpolice's capabilities (NET_ADMIN for steal and mirror)"),
		ignored("dns", sObject, isEmpty, "the agent resolves with the pod's own /etc/resolv.conf settings"),
		ignored("metrics", sString, isEmpty, "the agent exports no metrics"),
		ignored("nftables", sBool, never, "the agent picks iptables or nftables itself (see trafficpolice agent --nat-backend)"),
		ignored("network_interface", sString, isEmpty, "the agent redirects with nat rules and sniffs no interface"),
		ignored("max_body_buffer_size", sWhole, never, meansBodyOnly),
		ignored("max_body_buffer_timeout", sWhole, never, meansBodyOnly),
		ignored("jaq_time_limit", sWhole, never, meansBodyOnly),
	}
	pullSecretFields = []field{
		key("name", sString, "A docker-registry Secret in the agent's namespace."),
	}
	agentImageFields = []field{
		key("registry", sString, "The image's repository."),
		key("tag", sString, "The image's tag."),
	}
	featureFields = []field{
		key("network", shape{aBool, anObjectOf(networkFields)}, "The app's traffic; false turns incoming, outgoing and DNS off."),
		key("env", shape{aBool, anObjectOf(envFields)}, "Import the target's environment (default true)."),
		ignoredBy("fs", shape{aBool, anEnum("local", "localwithoverrides", "read", "write"), aObject}, fsLocal, fsMeans),
		ignored("hostname", sBool, isFalse, "the app sees the host's hostname, not the pod's"),
		ignored("copy_target", shape{aBool, aObject}, disabledObject("enabled"), "the agent joins the target pod itself, not a copy, and nothing is scaled down"),
		refused("db_branches", shape{aList, aObject}, isEmpty, "database branches need mirrord's operator, and without one the app's database traffic would reach the database the branch stands in for; point the app at a database of its own (feature.env.override) and remove the key"),
		ignored("preview", sObject, isEmpty, "`mirrord preview` settings are not used: the app runs here"),
		refused("split_queues", shape{aList, aObject}, isEmpty, "queue splitting needs mirrord's operator, and without one the app would take messages meant for the pod's app; remove the key"),
		ignored("magic", sObject, isEmpty, "the app sees the local AWS credentials and files, as it would without trafficpolice"),
	}
	networkFields = []field{
		key("outgoing", shape{aBool, anObjectOf(outgoingFields)}, "The connections the app makes; false sends all of them local."),
		key("dns", shape{aBool, anObjectOf(dnsFields)}, "Resolve names through the cluster (default true); false resolves everything on the host."),
		key("incoming", shape{aBool, anEnum(modes...), anObjectOf(incomingFields)}, `The pod's incoming traffic: "mirror" (default), "steal", "off", or an object.`),
		key("ipv6", sBool, "IPv6: accepted for mirrord's sake; trafficpolice carries IPv6 both ways (remote, local, DNS AAAA, steal and mirror) whatever the value."),
	}
	outgoingFields = []field{
		key("tcp", sBool, "Route TCP (false: all TCP goes local)."),
		key("udp", sBool, "Route UDP (false: all UDP goes local)."),
		key("ignore_localhost", sBool, "Loopback flows go to the host's loopback."),
		key("filter", shape{anObjectOf(outgoingFilterFields)}, `{"local": [...]} or {"remote": [...]}, and ours, "block": [...].`),
		refused("unix_streams", sStrOrList, isEmpty, "the app's unix socket connections would reach the host's sockets instead of the pod's; remove the key"),
	}
	outgoingFilterFields = []field{
		key("local", sStrOrList, "Entries [tcp|udp://][host|IP|[IPv6]][/prefix][:port] that go local; the rest goes remote."),
		key("remote", sStrOrList, "Entries that go remote; the rest goes local."),
		key("block", sStrOrList, "Ours: entries that are refused; wins over local and remote."),
	}
	dnsFields = []field{
		key("enabled", sBool, "Resolve through the cluster."),
		key("filter", shape{anObjectOf(dnsFilterFields)}, `{"local": [...]} or {"remote": [...]}: which side resolves names that no outgoing rule names.`),
	}
	dnsFilterFields = []field{
		key("local", sStrOrList, "Names resolved on the host."),
		key("remote", sStrOrList, "Names resolved by the cluster."),
	}
	incomingFields = []field{
		key("mode", shape{anEnum(modes...)}, `"mirror", "steal" or "off".`),
		key("ports", sPorts, "Take only these pod ports."),
		key("ignore_ports", sPorts, "Never take these ports (the app's or the pod's number)."),
		key("port_mapping", shape{alt{t: "array", items: shape{alt{t: "array", length: 2, items: shape{aPort}}}}}, "Pairs [local, remote]: the app listens on local and takes the pod's remote port."),
		key("ignore_localhost", sBool, "Not honoured yet (a warning when true): ports the app listens on only on loopback are taken too."),
		key("http_filter", shape{aBool, anObjectOf(httpFilterFields)}, "Take only the HTTP requests that match."),
		ignored("listen_ports", shape{alt{t: "array", items: sList}}, isEmpty, "the app listens on its own port numbers in its own network namespace, where they never clash with the host's"),
		noop("on_concurrent_steal", shape{anEnum("abort", "continue", "override")}, "Only for mirrord's operator; not used."),
		ignored("https_delivery", sObject, isEmpty, "stolen TLS connections reach the app as they arrived: TLS passes through"),
		ignored("tls_delivery", sObject, isEmpty, "stolen TLS connections reach the app as they arrived: TLS passes through"),
	}
	httpFilterFields = []field{
		key("header_filter", sString, `A regular expression (RE2) matched against each "Name: Value" header line, case-insensitively.`),
		key("path_filter", sString, "A regular expression (RE2) matched against the path, without the query."),
		key("method_filter", sString, "An HTTP method."),
		key("all_of", shape{alt{t: "array", items: shape{anObjectOf(innerFilterFields)}}}, "Filters that must all match."),
		key("any_of", shape{alt{t: "array", items: shape{anObjectOf(innerFilterFields)}}}, "Filters of which one must match."),
		key("ports", sPorts, "Filter only on these pod ports; others are taken whole."),
		refused("body_filter", sAny, isEmpty, whyBodyJQ),
		refused("header_filter_jq", sAny, isEmpty, whyBodyJQ),
	}
	innerFilterFields = []field{
		key("header", sString, `A regular expression matched against each "Name: Value" header line.`),
		key("path", sString, "A regular expression matched against the path."),
		key("method", sString, "An HTTP method."),
		refused("body", sAny, isEmpty, whyBodyJQ),
		refused("query", sAny, isEmpty, whyBodyJQ),
		refused("matches", sAny, isEmpty, whyBodyJQ),
	}
	envFields = []field{
		key("include", sStrOrList, `Only these variables ("A;B*" or a list; * and ? match).`),
		key("exclude", sStrOrList, "All variables but these."),
		key("override", shape{alt{t: "object", values: sString}}, "Variables set over the target's values."),
		noop("load_from_process", sBool, "The target's environment is read before the app starts anyway; not used."),
		ignored("env_file", sString, isEmpty, "the file's variables are not set for the app"),
		ignored("mapping", sObject, isEmpty, "the target's values are not rewritten"),
		ignored("unset", sStrOrList, isEmpty, "these variables stay set for the app"),
	}
)

// homes maps well-known keys to where they belong, to help when one is put at the wrong level.
var homes = map[string]string{
	"network": "feature.network", "env": "feature.env", "fs": "feature.fs",
	"outgoing": "feature.network.outgoing", "incoming": "feature.network.incoming",
	"dns": "feature.network.dns", "ipv6": "feature.network.ipv6",
	"tcp": "feature.network.outgoing.tcp", "udp": "feature.network.outgoing.udp",
	"mode": "feature.network.incoming.mode", "http_filter": "feature.network.incoming.http_filter",
	"port_mapping": "feature.network.incoming.port_mapping", "ignore_ports": "feature.network.incoming.ignore_ports",
	"include": "feature.env.include", "exclude": "feature.env.exclude", "override": "feature.env.override",
	"ttl": "agent.ttl", "image": "agent.image", "ephemeral": "agent.ephemeral", "address": "agent.address",
	"fingerprint":     "agent.fingerprint",
	"startup_timeout": "agent.startup_timeout", "communication_timeout": "agent.communication_timeout",
}
