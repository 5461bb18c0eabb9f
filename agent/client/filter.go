package client

import (
	"fmt"
	"strings"

	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/config"
)

// wireFilter turns the configuration's HTTP filter into the tunnel's; the
// zero filter takes whole connections. Ports is the caller's business
// (which pod ports get the filter), not the agent's.
func wireFilter(f config.HTTPFilter) proto.HTTPFilter {
	switch {
	case f.HeaderFilter != "":
		return proto.HTTPFilter{Kind: proto.FilterHeader, Pattern: f.HeaderFilter}
	case f.PathFilter != "":
		return proto.HTTPFilter{Kind: proto.FilterPath, Pattern: f.PathFilter}
	case f.MethodFilter != "":
		return proto.HTTPFilter{Kind: proto.FilterMethod, Pattern: f.MethodFilter}
	case f.AllOf != nil || f.AnyOf != nil:
		kind, list := proto.FilterAllOf, f.AllOf
		if f.AnyOf != nil {
			kind, list = proto.FilterAnyOf, f.AnyOf
		}
		w := proto.HTTPFilter{Kind: kind}
		for _, m := range list {
			w.Filters = append(w.Filters, wireFilter(m))
		}
		return w
	}
	return proto.HTTPFilter{}
}

// DescribeFilter says in a few words which requests f takes, as the
// agent applies it; "" for whole connections.
func DescribeFilter(f config.HTTPFilter) string { return describeWire(wireFilter(f)) }

func describeWire(f proto.HTTPFilter) string {
	switch f.Kind {
	case proto.FilterNone:
		return ""
	case proto.FilterAllOf, proto.FilterAnyOf:
		var parts []string
		for _, m := range f.Filters {
			parts = append(parts, describeWire(m))
		}
		return fmt.Sprintf("%s(%s)", f.Kind, strings.Join(parts, ", "))
	}
	return fmt.Sprintf("%s %q", f.Kind, f.Pattern)
}
