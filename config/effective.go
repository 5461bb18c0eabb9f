package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// The effective configuration in mirrord's key names; field order is print order.
type (
	effConfig struct {
		Target      effTarget  `json:"target"`
		Agent       effAgent   `json:"agent"`
		Feature     effFeature `json:"feature"`
		Kubeconfig  *string    `json:"kubeconfig"`
		KubeContext *string    `json:"kube_context"`
	}
	effTarget struct {
		Path      *string `json:"path"`
		Namespace *string `json:"namespace"`
	}
	effAgent struct {
		Namespace            *string `json:"namespace"`
		Image                *string `json:"image"`
		TTL                  int     `json:"ttl"`
		Ephemeral            bool    `json:"ephemeral"`
		Privileged           bool    `json:"privileged"`
		StartupTimeout       int     `json:"startup_timeout"`
		CommunicationTimeout int     `json:"communication_timeout"`
		Address              *string `json:"address"`
		Fingerprint          *string `json:"fingerprint"`
	}
	effFeature struct {
		Network effNetwork `json:"network"`
		Env     any        `json:"env"` // false, true or effEnv
	}
	effNetwork struct {
		Incoming effIncoming `json:"incoming"`
		Outgoing effOutgoing `json:"outgoing"`
		DNS      effDNS      `json:"dns"`
		IPv6     bool        `json:"ipv6"`
	}
	effIncoming struct {
		Mode            string         `json:"mode"`
		Ports           []uint16       `json:"ports,omitempty"`
		IgnorePorts     []uint16       `json:"ignore_ports,omitempty"`
		PortMapping     [][2]uint16    `json:"port_mapping,omitempty"`
		IgnoreLocalhost bool           `json:"ignore_localhost"`
		HTTPFilter      *effHTTPFilter `json:"http_filter,omitempty"`
	}
	effHTTPFilter struct {
		HeaderFilter string           `json:"header_filter,omitempty"`
		PathFilter   string           `json:"path_filter,omitempty"`
		MethodFilter string           `json:"method_filter,omitempty"`
		AllOf        []effInnerFilter `json:"all_of,omitempty"`
		AnyOf        []effInnerFilter `json:"any_of,omitempty"`
		Ports        []uint16         `json:"ports,omitempty"`
	}
	effInnerFilter struct {
		Header string `json:"header,omitempty"`
		Path   string `json:"path,omitempty"`
		Method string `json:"method,omitempty"`
	}
	effOutgoing struct {
		TCP             bool       `json:"tcp"`
		UDP             bool       `json:"udp"`
		IgnoreLocalhost bool       `json:"ignore_localhost"`
		Filter          *effFilter `json:"filter,omitempty"`
	}
	effFilter struct {
		Local  []string `json:"local,omitempty"`
		Remote []string `json:"remote,omitempty"`
		Block  []string `json:"block,omitempty"`
	}
	effDNS struct {
		Enabled bool       `json:"enabled"`
		Filter  *effFilter `json:"filter,omitempty"`
	}
	effEnv struct {
		Include  []string          `json:"include,omitempty"`
		Exclude  []string          `json:"exclude,omitempty"`
		Override map[string]string `json:"override,omitempty"`
	}
)

// Effective returns the configuration with every default filled in, as indented JSON in
// mirrord's key names: what `trafficpolice config check` prints. Parsing it gives back the
// same Config. An unset string prints as null. It validates first.
func (c *Config) Effective() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	nw := c.Feature.Network
	out := effConfig{
		Target: effTarget{Path: orNull(c.Target.Path), Namespace: orNull(c.Target.Namespace)},
		Agent: effAgent{
			Namespace: orNull(c.Agent.Namespace), Image: orNull(c.Agent.Image),
			TTL: c.Agent.TTL, Ephemeral: c.Agent.Ephemeral, Privileged: c.Agent.Privileged,
			StartupTimeout: c.Agent.StartupTimeout, CommunicationTimeout: c.Agent.CommunicationTimeout,
			Address: orNull(c.Agent.Address), Fingerprint: orNull(c.Agent.Fingerprint),
		},
		Feature: effFeature{
			Network: effNetwork{
				Incoming: effIncoming{
					Mode: nw.Incoming.Mode, Ports: nw.Incoming.Ports, IgnorePorts: nw.Incoming.IgnorePorts,
					PortMapping: nw.Incoming.PortMapping, IgnoreLocalhost: nw.Incoming.IgnoreLocalhost,
					HTTPFilter: effectiveHTTPFilter(nw.Incoming.HTTPFilter),
				},
				Outgoing: effOutgoing{
					TCP: nw.Outgoing.TCP, UDP: nw.Outgoing.UDP, IgnoreLocalhost: nw.Outgoing.IgnoreLocalhost,
					Filter: effectiveFilter(nw.Outgoing.Filter.Local, nw.Outgoing.Filter.Remote, nw.Outgoing.Filter.Block),
				},
				DNS:  effDNS{Enabled: nw.DNS.Enabled, Filter: effectiveFilter(nw.DNS.Filter.Local, nw.DNS.Filter.Remote, nil)},
				IPv6: nw.IPv6,
			},
			Env: effectiveEnv(c.Feature.Env),
		},
		Kubeconfig:  orNull(c.Kubeconfig),
		KubeContext: orNull(c.KubeContext),
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep regular expressions such as "^a<b" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encode effective configuration: %w", err)
	}
	return inlineScalarLists(buf.Bytes()), nil
}

// scalarList matches an indented JSON list that holds only strings, numbers, booleans or null.
var scalarList = regexp.MustCompile(`\[\n(?:[ ]*(?:"(?:[^"\\]|\\.)*"|[-+.0-9eE]+|true|false|null),?\n)+[ ]*\]`)

// inlineScalarLists puts such lists on one line: ["app-db", ":8888"] reads better than one
// entry a line. JSON strings hold no raw newlines, so every newline here is layout.
func inlineScalarLists(b []byte) []byte {
	return scalarList.ReplaceAllFunc(b, func(m []byte) []byte {
		lines := strings.Split(string(m), "\n")
		for i := range lines {
			lines[i] = strings.TrimSpace(lines[i])
		}
		inner := strings.Join(lines[1:len(lines)-1], " ")
		return []byte("[" + inner + "]")
	})
}

func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func effectiveFilter(local, remote, block []string) *effFilter {
	if local == nil && remote == nil && block == nil {
		return nil
	}
	return &effFilter{Local: local, Remote: remote, Block: block}
}

func effectiveHTTPFilter(f *HTTPFilter) *effHTTPFilter {
	if f == nil {
		return nil
	}
	inner := func(fs []HTTPFilter) []effInnerFilter {
		var out []effInnerFilter
		for _, x := range fs {
			out = append(out, effInnerFilter{Header: x.HeaderFilter, Path: x.PathFilter, Method: x.MethodFilter})
		}
		return out
	}
	return &effHTTPFilter{
		HeaderFilter: f.HeaderFilter, PathFilter: f.PathFilter, MethodFilter: f.MethodFilter,
		AllOf: inner(f.AllOf), AnyOf: inner(f.AnyOf), Ports: f.Ports,
	}
}

func effectiveEnv(e Env) any {
	if !e.Enabled {
		return false
	}
	if e.Include == nil && e.Exclude == nil && e.Override == nil {
		return true
	}
	return effEnv{Include: e.Include, Exclude: e.Exclude, Override: e.Override}
}
