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
