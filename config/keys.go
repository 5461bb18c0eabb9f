package config

import "slices"

// The keys of mirrord's configuration format, and what trafficpolice does with each: decodes
// it, accepts it as a harmless no-op, or refuses it as not supported yet (unless its value
// matches what trafficpolice does anyway).

// fieldKind says how the walker treats a key of mirrord's format.
type fieldKind int

const (
	fSupported fieldKind = iota // decoded by the section that owns it
	fNoop                       // harmless for trafficpolice: type-checked, then not used
	fNotYet                     // not supported yet, unless the value matches what we do anyway
)

// field is one key an object may hold.
type field struct {
	name string
	kind fieldKind
	ok   func(*node) bool // fNoop: the value has the right type; fNotYet: the value is accepted
	want string           // fNoop: the valid values, for the error message
	why  string           // fNotYet: why it is not supported and what to do instead
}

func keys(names ...string) []field {
	fs := make([]field, len(names))
	for i, n := range names {
		fs[i] = field{name: n}
	}
	return fs
}

func noop(name string, ok func(*node) bool, want string) field {
	return field{name: name, kind: fNoop, ok: ok, want: want}
}

func notYet(name string, ok func(*node) bool, why string) field {
	return field{name: name, kind: fNotYet, ok: ok, why: why}
}

// Value tests for noop and notYet fields.
func isBool(n *node) bool   { return n.kind == kBool }
func isString(n *node) bool { return n.kind == kString }
func isObject(n *node) bool { return n.kind == kObject }
func isFalse(n *node) bool  { return n.kind == kBool && !n.b }
func isTrue(n *node) bool   { return n.kind == kBool && n.b }

func isStringOrList(n *node) bool {
	if n.kind == kString {
		return true
	}
	if n.kind != kList {
		return false
	}
	for _, e := range n.list {
		if e.kind != kString {
			return false
		}
	}
	return true
}

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

func oneOf(values ...string) func(*node) bool {
	return func(n *node) bool { return n.kind == kString && slices.Contains(values, n.s) }
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
	whyPodSpec  = "the agent's pod spec cannot be customised yet; remove the key"
	whyOperator = "it needs the mirrord operator, which trafficpolice does not use; remove the key"
	whyBodyJQ   = "HTTP body and jq filters are not supported yet; filter on header, path or method instead"
	whyLayer    = "mirrord's libc layer switches have no meaning for trafficpolice, which routes at the IP layer; remove the section"
)

// The keys of each object in mirrord's format, with what trafficpolice does with them.
var (
	rootFields = append(keys("target", "agent", "feature", "kubeconfig", "kube_context"),
		noop("$schema", isString, "a string"),
		notYet("accept_invalid_certificates", isFalse, "trafficpolice checks the cluster's certificate as the kubeconfig says; set insecure-skip-tls-verify in the kubeconfig instead"),
		notYet("operator", isFalse, "trafficpolice has no operator and always runs its own agent; set false or remove the key"),
		notYet("api", isFalse, "there is no session monitor API; use --flow-log FILE to see where every flow went"),
		noop("baggage", isString, "a string"),     // operator only; mirrord ignores it without one
		noop("traceparent", isString, "a string"), // operator only
		notYet("ci", isEmpty, "run `trafficpolice sandbox run` in CI instead of `mirrord ci`; remove the section"),
		notYet("container", isEmpty, "`mirrord container` has no trafficpolice equivalent yet; remove the section"),
		notYet("experimental", isEmpty, whyLayer),
		noop("internal_proxy", isObject, "an object"), // tunes mirrord's proxy processes; trafficpolice has none
		noop("external_proxy", isObject, "an object"),
		notYet("key", isEmpty, "session keys and {{ key }} templates are not supported yet; write the value literally in http_filter"),
		notYet("profile", isEmpty, whyOperator),
		noop("sip_binaries", isStringOrList, "a string or a list of strings"), // macOS only; mirrord ignores it on Linux
		noop("skip_sip", isStringOrList, "a string or a list of strings"),
		notYet("skip_build_tools", isFalse, "the whole command, build tools included, runs in the sandbox; build first, then run the binary under trafficpolice"),
		notYet("skip_extra_build_tools", isEmpty, "the whole command, build tools included, runs in the sandbox; build first, then run the binary under trafficpolice"),
		notYet("skip_processes", isEmpty, "every process the command starts shares the sandbox's network; start processes that must stay outside it outside trafficpolice"),
		notYet("startup_retry", isEmpty, "trafficpolice retries Kubernetes API requests with its own settings; remove the section"),
		noop("telemetry", isBool, "true or false"), // trafficpolice sends no telemetry either way
		notYet("use_proxy", isTrue, "trafficpolice's Kubernetes client uses HTTP_PROXY/HTTPS_PROXY from the environment; unset them instead"),
		notYet("connect_tcp", isEmpty, "use --agent-address to reach a running agent"),
		notYet("pause", isFalse, "pausing the target container is not supported"),
	)
	targetFields       = keys("path", "namespace")
	targetStructFields = append(keys("pod", "deployment", "rollout", "stateful_set", "replica_set", "service", "job", "cron_job"), field{name: "container"})
	agentFields        = append(keys("namespace", "image", "ttl", "ephemeral", "privileged", "startup_timeout", "communication_timeout", "address"),
		noop("log_level", isString, "a string"),
		noop("json_log", isBool, "true or false"),
		notYet("clean_iptables_on_start", isTrue, "trafficpolice's agent always removes stale rules it finds; set true or remove the key"),
		notYet("flush_connections", isFalse, "the agent does not flush established connections when it starts to steal; set false or remove the key"),
		notYet("inject_headers", isFalse, "the agent does not add headers to responses; set false or remove the key"),
		notYet("exclude_from_mesh", isFalse, whyPodSpec),
		notYet("check_out_of_pods", isFalse, "trafficpolice does not check the node's room for the agent; set false or remove the key"),
		notYet("annotations", isEmpty, whyPodSpec),
		notYet("labels", isEmpty, whyPodSpec),
		notYet("node_selector", isEmpty, whyPodSpec),
		notYet("priority_class", isEmpty, whyPodSpec),
		notYet("resources", isEmpty, whyPodSpec),
		notYet("security_context", isEmpty, whyPodSpec),
		notYet("service_account", isEmpty, whyPodSpec),
		notYet("tolerations", isEmpty, whyPodSpec),
		notYet("image_pull_policy", isEmpty, whyPodSpec),
		notYet("image_pull_secrets", isEmpty, whyPodSpec),
		notYet("disabled_capabilities", isEmpty, whyPodSpec),
		notYet("disable_mesh_sidecar_injection", isEmpty, whyPodSpec),
		notYet("dns", isEmpty, "the agent resolves with the pod's own /etc/resolv.conf settings; remove the section"),
		notYet("metrics", isEmpty, "the agent exports no metrics yet; remove the key"),
		notYet("nftables", isEmpty, "the agent uses the iptables backend its image's iptables command picks; remove the key"),
		notYet("network_interface", isEmpty, "the agent redirects traffic with iptables, not by sniffing an interface; remove the key"),
		notYet("max_body_buffer_size", isEmpty, whyBodyJQ),
		notYet("max_body_buffer_timeout", isEmpty, whyBodyJQ),
		notYet("jaq_time_limit", isEmpty, whyBodyJQ),
	)
	agentImageFields = keys("registry", "tag")
	featureFields    = append(keys("network", "env"),
		notYet("fs", fsLocal, `the sandboxed app always uses the local file system; set "local" or false, or remove the key`),
		notYet("hostname", isFalse, "the sandboxed app sees the host's hostname, not the target pod's; set false or remove the key"),
		notYet("copy_target", disabledObject("enabled"), whyOperator),
		notYet("db_branches", isEmpty, whyOperator),
		notYet("preview", isEmpty, whyOperator),
		notYet("split_queues", isEmpty, whyOperator),
		notYet("magic", disabledObject("aws"), `trafficpolice does not hide local AWS credentials from the app; set {"aws": false} or remove the key`),
	)
	networkFields  = keys("outgoing", "dns", "incoming", "ipv6")
	outgoingFields = append(keys("tcp", "udp", "ignore_localhost", "filter"),
		notYet("unix_streams", isEmpty, "unix sockets are not network traffic: the sandboxed app always connects to the host's unix sockets; remove the key"),
	)
	outgoingFilterFields = keys("local", "remote", "block")
	dnsFields            = keys("enabled", "filter")
	dnsFilterFields      = keys("local", "remote")
	incomingFields       = append(keys("mode", "ports", "ignore_ports", "port_mapping", "ignore_localhost", "http_filter"),
		notYet("listen_ports", isEmpty, "the app listens inside the sandbox's own network namespace, so its ports never clash with the host's; remove the key"),
		noop("on_concurrent_steal", oneOf("abort", "continue", "override"), `"abort", "continue" or "override"`), // operator only
		notYet("https_delivery", isEmpty, whyOperator),
		notYet("tls_delivery", isEmpty, whyOperator),
	)
	httpFilterFields = append(keys("header_filter", "path_filter", "method_filter", "all_of", "any_of", "ports"),
		notYet("body_filter", isEmpty, whyBodyJQ),
		notYet("header_filter_jq", isEmpty, whyBodyJQ),
	)
	innerFilterFields = append(keys("header", "path", "method"),
		notYet("body", isEmpty, whyBodyJQ),
		notYet("query", isEmpty, whyBodyJQ),
		notYet("matches", isEmpty, whyBodyJQ),
	)
	envFields = append(keys("include", "exclude", "override"),
		noop("load_from_process", isBool, "true or false"), // trafficpolice reads the target's environment before the app starts anyway
		notYet("env_file", isEmpty, `reading env files is not supported yet; export the variables before running trafficpolice or use "override"`),
		notYet("mapping", isEmpty, `rewriting values by pattern is not supported yet; use "override"`),
		notYet("unset", isEmpty, "unset the variables before running trafficpolice"),
	)
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
	"startup_timeout": "agent.startup_timeout", "communication_timeout": "agent.communication_timeout",
}
