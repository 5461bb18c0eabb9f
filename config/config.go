package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Config is one run's configuration, in mirrord's terms.
type Config struct {
	Target      Target
	Agent       Agent
	Feature     Feature
	Kubeconfig  string // mirrord's top-level "kubeconfig": path to a kubeconfig file
	KubeContext string // mirrord's "kube_context": context to use from the kubeconfig

	// Ignored lists the keys the file set that trafficpolice does not honour but can run
	// without, in key-path order: warn about each, or refuse them (Strict). They are not part
	// of the effective configuration.
	Ignored []Ignored
}

// Target names what the app should behave as if it ran inside.
type Target struct {
	// Path is "" (none given), "targetless", or KIND/NAME[/container/CONTAINER] with KIND one
	// of TargetKinds ("pod/uwu-app", "deployment/api/container/main").
	Path string
	// Namespace is the target's namespace; "" means the kubeconfig context's namespace.
	Namespace string
}

// Agent configures the agent that runs inside the target pod's network namespace.
type Agent struct {
	Namespace string // where a Job-based agent runs; "" means the current namespace
	Image     string // agent image; "" means trafficpolice's own image
	// ImagePullSecrets name the Secrets the agent's Job pulls its image with.
	ImagePullSecrets []string
	// TTL is how long (seconds) the agent's pod stays after the agent exits.
	TTL        int
	Ephemeral  bool // run as an ephemeral container in the target pod
	Privileged bool // run the agent's container privileged
	// StartupTimeout is how long (seconds) to wait for the agent to be ready.
	StartupTimeout int
	// CommunicationTimeout is how long (seconds) the agent lives without a client.
	CommunicationTimeout int
	// Address is ours: host:port of an agent that is already running (a CI sidecar, a VM, the
	// test harness); when set, no agent is started through Kubernetes.
	Address string
	// Fingerprint is ours: the running agent's key fingerprint ("sha256:..."), pinned by the
	// client so that the tunnel to Address is TLS and the token goes only to that agent.
	Fingerprint string
}

// Feature holds the features trafficpolice shares with mirrord.
type Feature struct {
	Network Network
	Env     Env
}

// Network configures the sandbox's traffic.
type Network struct {
	Outgoing Outgoing
	DNS      DNS
	Incoming Incoming
	IPv6     bool
}

// Outgoing configures connections the app makes.
type Outgoing struct {
	// TCP and UDP say whether that protocol's traffic may go remote at all; mirrord's
	// "outgoing": false sets both false.
	TCP, UDP bool
	// IgnoreLocalhost sends loopback traffic to the host's loopback.
	IgnoreLocalhost bool
	Filter          OutgoingFilter
}

// OutgoingFilter lists filter entries. Entries are kept as written; their grammar
// ([tcp|udp|any://][host|IPv4|[IPv6]][/prefix][:port]) is checked by the outgoing policy.
// A nil list was not given; Local and Remote never both hold entries.
type OutgoingFilter struct {
	Local, Remote []string
	Block         []string // ours: always refused; wins over Local and Remote
}

// DNS configures name resolution for the sandbox.
type DNS struct {
	Enabled bool // resolve through the cluster (false: everything resolves locally)
	Filter  DNSFilter
}

// DNSFilter says which names resolve on which side; at most one of the lists is set.
type DNSFilter struct {
	Local, Remote []string
}

// Incoming configures traffic that reaches the target pod.
type Incoming struct {
	Mode        string   // "off", "mirror" or "steal"
	Ports       []uint16 // only these remote ports (nil: all)
	IgnorePorts []uint16 // never these ports
	// PortMapping pairs [local, remote]: the app listens on local, the pod's port is remote.
	PortMapping     [][2]uint16
	IgnoreLocalhost bool
	HTTPFilter      *HTTPFilter // nil: steal whole connections
}

// Incoming modes.
const (
	ModeOff    = "off"
	ModeMirror = "mirror"
	ModeSteal  = "steal"
)

// HTTPFilter selects the HTTP requests to steal. At the top level exactly one of HeaderFilter,
// PathFilter, MethodFilter, AllOf and AnyOf is set; inside AllOf and AnyOf each element sets
// exactly one of HeaderFilter, PathFilter and MethodFilter. Header and path filters are Go
// regular expressions; the method filter is a method name, compared case-insensitively.
type HTTPFilter struct {
	HeaderFilter, PathFilter, MethodFilter string
	AllOf, AnyOf                           []HTTPFilter
	Ports                                  []uint16 // filter only on these ports (nil: all); top level only
}

// Env configures which of the target's environment variables the app gets.
type Env struct {
	Enabled bool
	// Include and Exclude hold variable names or patterns with * and ?; at most one is set.
	Include, Exclude []string
	Override         map[string]string // set locally, over the remote value
}

// Default returns mirrord's defaults for the shared subset.
func Default() *Config {
	return &Config{
		Agent: Agent{TTL: 1, StartupTimeout: 60, CommunicationTimeout: 30},
		Feature: Feature{
			Network: Network{
				Outgoing: Outgoing{TCP: true, UDP: true},
				DNS:      DNS{Enabled: true},
				Incoming: Incoming{Mode: ModeMirror},
			},
			Env: Env{Enabled: true},
		},
	}
}

// TargetKinds are the target kinds trafficpolice accepts in Target.Path, besides "targetless".
// They are the kinds agent/kube resolves; mirrord's "rollout" and "cronjob" are refused.
var TargetKinds = []string{"pod", "deployment", "statefulset", "replicaset", "job", "service"}

// Kind returns the target's kind: "" when no target is given, "targetless", or one of
// TargetKinds ("deploy" is returned as "deployment").
func (t Target) Kind() string {
	if t.Path == "" || t.Path == "targetless" {
		return t.Path
	}
	kind, _, _ := strings.Cut(t.Path, "/")
	if kind == "deploy" {
		return "deployment"
	}
	return kind
}

// Name returns the target resource's name, or "" for none and targetless.
func (t Target) Name() string {
	parts := strings.Split(t.Path, "/")
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}

// Container returns the container named in the path, or "" when mirrord should choose.
func (t Target) Container() string {
	parts := strings.Split(t.Path, "/")
	if len(parts) == 4 && parts[2] == "container" {
		return parts[3]
	}
	return ""
}

// Format is a configuration file's syntax.
type Format int

// Formats Parse understands.
const (
	JSON Format = iota
	YAML
	TOML
)

// String returns the format's name.
func (f Format) String() string {
	switch f {
	case JSON:
		return "JSON"
	case YAML:
		return "YAML"
	case TOML:
		return "TOML"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// FormatForPath picks the format by file extension: .yaml and .yml are YAML, .toml is TOML,
// anything else (.json included) is JSON, as mirrord does.
func FormatForPath(path string) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return YAML
	case ".toml":
		return TOML
	}
	return JSON
}
