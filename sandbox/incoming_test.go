package sandbox

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/config"
)

func TestIncomingTakesThePortsTheConfigurationSays(t *testing.T) {
	cases := []struct {
		cfg    config.Incoming
		local  uint16
		remote uint16
		take   bool
	}{
		{config.Incoming{}, 9999, 9999, true},
		{config.Incoming{PortMapping: [][2]uint16{{9333, 80}}}, 9333, 80, true},
		{config.Incoming{PortMapping: [][2]uint16{{9333, 80}}}, 80, 80, true},
		{config.Incoming{Ports: []uint16{80}, PortMapping: [][2]uint16{{9333, 80}}}, 9333, 80, true},
		{config.Incoming{Ports: []uint16{80}}, 8080, 8080, false},
		{config.Incoming{IgnorePorts: []uint16{9000}}, 9000, 9000, false},
		{config.Incoming{IgnorePorts: []uint16{80}, PortMapping: [][2]uint16{{9333, 80}}}, 9333, 80, false},
	}
	for _, c := range cases {
		in := &incoming{cfg: c.cfg}
		remote, take := in.remotePort(c.local)
		if remote != c.remote || take != c.take {
			t.Errorf("%+v: app port %d → pod port %d, take %v; want %d, %v", c.cfg, c.local, remote, take, c.remote, c.take)
		}
	}
}

func TestIncomingFilterOnItsPorts(t *testing.T) {
	in := &incoming{cfg: config.Incoming{HTTPFilter: &config.HTTPFilter{
		AnyOf: []config.HTTPFilter{{HeaderFilter: "^x-user: a$"}, {MethodFilter: "PUT"}, {PathFilter: "^/api"}},
		Ports: []uint16{80},
	}}}
	want := proto.HTTPFilter{Kind: proto.FilterAnyOf, Filters: []proto.HTTPFilter{
		{Kind: proto.FilterHeader, Pattern: "^x-user: a$"},
		{Kind: proto.FilterMethod, Pattern: "PUT"},
		{Kind: proto.FilterPath, Pattern: "^/api"},
	}}
	if got := in.filterFor(80); !reflect.DeepEqual(got, want) {
		t.Errorf("filter on port 80 = %+v, want %+v", got, want)
	}
	if got := in.filterFor(8080); got.Kind != proto.FilterNone {
		t.Errorf("port 8080 is not in http_filter.ports, yet filtered: %+v", got)
	}
	if d := describeFilter(want); d != `any_of(header "^x-user: a$", method "PUT", path "^/api")` {
		t.Errorf("describeFilter = %s", d)
	}
}

type refusingAgent struct{ why string }

func (a refusingAgent) IncomingError() string { return a.why }
func (refusingAgent) Subscribe(context.Context, client.SubscribeOptions) (*client.Subscription, error) {
	return nil, errors.New("not called")
}

func TestIncomingNeedsAnAgentThatCanSteal(t *testing.T) {
	agent := refusingAgent{why: "iptables: permission denied"}
	_, err := newIncoming(nil, Options{Incoming: config.Incoming{Mode: config.ModeSteal}, IncomingAgent: agent})
	if err == nil || !strings.Contains(err.Error(), "cannot steal the pod's traffic: iptables: permission denied") || !strings.Contains(err.Error(), "NET_ADMIN") {
		t.Errorf("steal without the means: %v, want an error saying why and what to do", err)
	}
	in, err := newIncoming(nil, Options{Incoming: config.Incoming{Mode: config.ModeMirror}, IncomingAgent: agent})
	if in != nil || err != nil {
		t.Errorf("mirror (the default) without the means: %v, %v; want a note, not an error", in, err)
	}
	in, err = newIncoming(nil, Options{Incoming: config.Incoming{Mode: config.ModeOff}, IncomingAgent: agent})
	if in != nil || err != nil {
		t.Errorf("off: %v, %v", in, err)
	}
	_, err = newIncoming(nil, Options{Incoming: config.Incoming{Mode: config.ModeSteal, PortMapping: [][2]uint16{{1, 2}, {1, 3}}}, IncomingAgent: refusingAgent{}})
	if err == nil || !strings.Contains(err.Error(), "port_mapping[1] maps local port 1 again") {
		t.Errorf("a local port mapped twice: %v", err)
	}
}
