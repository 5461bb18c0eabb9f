package policy

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// evalSteps is how the kernel fast path applies Steps.
func evalSteps(steps []Step, f Flow) (Step, bool) {
	for _, s := range steps {
		if s.Proto != AnyProto && s.Proto != f.Proto {
			continue
		}
		if s.Port != 0 && s.Port != f.Dst.Port() {
			continue
		}
		if s.Prefix.IsValid() && !s.Prefix.Contains(f.Dst.Addr()) {
			continue
		}
		return s, true
	}
	return Step{}, false
}

// TestStepsDecideAsDecide compares Steps with Decide on random flows to
// unnamed, non-loopback destinations, for rule sets of every shape.
func TestStepsDecideAsDecide(t *testing.T) {
	sets := []Rules{
		{TCP: true, UDP: true},
		{TCP: true, UDP: true, HaveRemote: true},
		{TCP: true, UDP: true, HaveRemote: true, Local: []string{"10.1.0.0/16", "tcp://:5432", "db.local", "udp://10.2.0.1:53"}},
		{TCP: true, UDP: true, HaveRemote: false, Local: []string{"10.1.0.0/16"}},
		{TCP: true, UDP: true, HaveRemote: true, Remote: []string{"10.0.0.0/8", "api.cluster", "tcp://:443"}, Block: []string{"10.9.0.0/16:22", "evil.example"}},
		{TCP: false, UDP: true, HaveRemote: true, Block: []string{"udp://10.3.0.0/16"}},
		{TCP: true, UDP: false, HaveRemote: true, Local: []string{"[fd00::]/8", "0.0.0.0:8080"}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	addrs := []netip.Addr{
		netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.2.0.1"), netip.MustParseAddr("10.9.4.4"),
		netip.MustParseAddr("10.3.0.9"), netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("fd00::1"),
		netip.MustParseAddr("2001:db8::1"),
	}
	ports := []uint16{22, 53, 443, 5432, 8080, 9999}
	for i, r := range sets {
		p, err := New(r)
		if err != nil {
			t.Fatalf("set %d: %v", i, err)
		}
		steps := p.Steps()
		for n := 0; n < 500; n++ {
			f := Flow{
				Proto: []Proto{TCP, UDP}[rng.IntN(2)],
				Dst:   netip.AddrPortFrom(addrs[rng.IntN(len(addrs))], ports[rng.IntN(len(ports))]),
			}
			want := p.Decide(f)
			got, ok := evalSteps(steps, f)
			if !ok {
				t.Fatalf("set %d, flow %v %v: no step matched (steps %+v)", i, f.Proto, f.Dst, steps)
			}
			if got.Local != (want.Route == Local) || got.Rule != want.Rule {
				t.Fatalf("set %d, flow %v %v: step says local=%v (%s), Decide says %v", i, f.Proto, f.Dst, got.Local, got.Rule, want)
			}
		}
	}
}

// TestUniformRouteAgreesWithDecide checks UniformRoute against Decide on
// every port a rule names and others, both protocols.
func TestUniformRouteAgreesWithDecide(t *testing.T) {
	dst := netip.MustParseAddr("10.1.2.3")
	for _, c := range []struct {
		rules   Rules
		names   []string
		uniform bool
		route   Route
	}{
		{Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{"db"}}, []string{"db"}, true, Local},
		{Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{"db"}}, []string{"other"}, true, Remote},
		{Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{"tcp://db:5432"}}, []string{"db"}, false, Local},
		{Rules{TCP: true, UDP: true, HaveRemote: true, Local: []string{"db"}, Block: []string{"udp://:53"}}, []string{"db"}, false, Local},
		{Rules{TCP: true, UDP: false, HaveRemote: true, Local: []string{"tcp://db"}}, []string{"db"}, true, Local},
		{Rules{TCP: true, UDP: true, HaveRemote: true, Remote: []string{"api"}}, []string{"db", "api"}, true, Remote},
	} {
		p, err := New(c.rules)
		if err != nil {
			t.Fatal(err)
		}
		d, uniform := p.UniformRoute(dst, c.names)
		if uniform != c.uniform || (uniform && d.Route != c.route) {
			t.Errorf("rules %+v, names %v: UniformRoute = %v, %v; want %v, %v", c.rules, c.names, d, uniform, c.route, c.uniform)
		}
		if !uniform {
			continue
		}
		for _, port := range []uint16{1, 53, 80, 443, 5432, 65535} {
			for _, proto := range []Proto{TCP, UDP} {
				if got := p.Decide(Flow{Proto: proto, Dst: netip.AddrPortFrom(dst, port), Names: c.names}); got.Route != d.Route {
					t.Errorf("rules %+v: uniform %v but %v port %d decides %v", c.rules, d.Route, proto, port, got)
				}
			}
		}
	}
	if _, uniform := (&Policy{}).UniformRoute(netip.MustParseAddr("127.0.0.1"), nil); uniform {
		t.Errorf("loopback is never uniform")
	}
}
