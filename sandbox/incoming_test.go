package sandbox

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/agent/client"
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
	if got := in.filterFor(80); !reflect.DeepEqual(got, *in.cfg.HTTPFilter) {
		t.Errorf("filter on port 80 = %+v, want the configuration's %+v", got, *in.cfg.HTTPFilter)
	}
	if got := in.filterFor(8080); !reflect.DeepEqual(got, config.HTTPFilter{}) {
		t.Errorf("port 8080 is not in http_filter.ports, yet filtered: %+v", got)
	}
}

type refusingAgent struct{ why string }

func (a refusingAgent) IncomingError() string { return a.why }
func (refusingAgent) Subscribe(context.Context, client.SubscribeOptions) (*client.Subscription, error) {
	return nil, errors.New("not called")
}

func TestIncomingNeedsAnAgentThatCanSteal(t *testing.T) {
	agent := refusingAgent{why: "iptables: permission denied"}
	_, err := newIncoming(nil, Options{Incoming: config.Incoming{Mode: config.ModeSteal}}, agent)
	if err == nil || !strings.Contains(err.Error(), "cannot steal the pod's traffic: iptables: permission denied") || !strings.Contains(err.Error(), "NET_ADMIN") {
		t.Errorf("steal without the means: %v, want an error saying why and what to do", err)
	}
	in, err := newIncoming(nil, Options{Incoming: config.Incoming{Mode: config.ModeMirror}}, agent)
	if in != nil || err != nil {
		t.Errorf("mirror (the default) without the means: %v, %v; want a note, not an error", in, err)
	}
	in, err = newIncoming(nil, Options{Incoming: config.Incoming{Mode: config.ModeOff}}, agent)
	if in != nil || err != nil {
		t.Errorf("off: %v, %v", in, err)
	}
	_, err = newIncoming(nil, Options{Incoming: config.Incoming{Mode: config.ModeSteal, PortMapping: [][2]uint16{{1, 2}, {1, 3}}}}, refusingAgent{})
	if err == nil || !strings.Contains(err.Error(), "port_mapping[1] maps local port 1 again") {
		t.Errorf("a local port mapped twice: %v", err)
	}
}
