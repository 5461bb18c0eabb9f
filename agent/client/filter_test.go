package client

import (
	"reflect"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/config"
)

func TestFilterOnTheWire(t *testing.T) {
	f := config.HTTPFilter{
		AnyOf: []config.HTTPFilter{{HeaderFilter: "^x-user: a$"}, {MethodFilter: "PUT"}, {PathFilter: "^/api"}},
		Ports: []uint16{80},
	}
	want := proto.HTTPFilter{Kind: proto.FilterAnyOf, Filters: []proto.HTTPFilter{
		{Kind: proto.FilterHeader, Pattern: "^x-user: a$"},
		{Kind: proto.FilterMethod, Pattern: "PUT"},
		{Kind: proto.FilterPath, Pattern: "^/api"},
	}}
	if got := wireFilter(f); !reflect.DeepEqual(got, want) {
		t.Errorf("wireFilter = %+v, want %+v", got, want)
	}
	if d := DescribeFilter(f); d != `any_of(header "^x-user: a$", method "PUT", path "^/api")` {
		t.Errorf("DescribeFilter = %s", d)
	}
	if got := wireFilter(config.HTTPFilter{}); got.Kind != proto.FilterNone {
		t.Errorf("the zero filter on the wire: %+v, want none (whole connections)", got)
	}
	if d := DescribeFilter(config.HTTPFilter{}); d != "" {
		t.Errorf("DescribeFilter of no filter = %q, want \"\"", d)
	}
}
