package policy

import "testing"

// The whole loopback range is loopback, and so are the unspecified
// addresses as destinations (the kernel connects 0.0.0.0 to 127.0.0.1 and
// :: to ::1): none of it reaches the host's loopback unless a rule says so.
func TestLoopbackRangeAndUnspecifiedNeverReachTheHostByDefault(t *testing.T) {
	dsts := []string{"127.0.0.1:8888", "127.0.0.2:8888", "127.255.255.254:8888", "0.0.0.0:8888", "[::1]:8888", "[::]:8888", "[::ffff:0.0.0.0]:8888", "[::ffff:127.0.0.2]:8888"}
	for _, tc := range []struct {
		name  string
		rules Rules
	}{
		{"no agent, no filter", Rules{}},
		{"agent, no filter", Rules{HaveRemote: true}},
		{"no agent, local filter without loopback", Rules{Local: []string{"10.0.0.0/8", ":5432"}}},
		{"agent, local filter without loopback", Rules{HaveRemote: true, Local: []string{"10.0.0.0/8"}}},
	} {
		p := mustNew(t, tc.rules)
		for _, dst := range dsts {
			for _, proto := range []Proto{TCP, UDP} {
				if d := p.Decide(flow(proto, dst, "")); d.Route == Local {
					t.Errorf("%s: %s %s goes to the host's loopback (%s), want it kept from the host", tc.name, proto, dst, d)
				}
			}
		}
	}
}

func TestUnspecifiedDestinationIsLoopbackForRules(t *testing.T) {
	for _, tc := range []struct {
		rules Rules
		dst   string
		route Route
	}{
		{Rules{HaveRemote: true, Local: []string{":8888"}}, "0.0.0.0:8888", Local},
		{Rules{HaveRemote: true, Local: []string{"127.0.0.1:8888"}}, "0.0.0.0:8888", Local},
		{Rules{HaveRemote: true, Local: []string{"127.0.0.0/8:8888"}}, "127.0.0.2:8888", Local},
		{Rules{HaveRemote: true, Local: []string{"localhost"}}, "0.0.0.0:8888", Local},
		{Rules{HaveRemote: true, Local: []string{"localhost"}}, "[::]:8888", Local},
		{Rules{HaveRemote: true, Local: []string{"[::1]:8888"}}, "[::]:8888", Local},
		{Rules{HaveRemote: true, IgnoreLocalhost: true}, "0.0.0.0:8888", Local},
		{Rules{HaveRemote: true, IgnoreLocalhost: true}, "127.0.0.2:8888", Local},
		{Rules{Block: []string{"127.0.0.0/8"}, IgnoreLocalhost: true}, "0.0.0.0:8888", Block},
		{Rules{Block: []string{"localhost"}, IgnoreLocalhost: true}, "127.0.0.2:8888", Block},
		{Rules{HaveRemote: true, Local: []string{"10.0.0.0/8"}}, "0.0.0.0:8888", Remote},
	} {
		p := mustNew(t, tc.rules)
		if d := p.Decide(flow(TCP, tc.dst, "")); d.Route != tc.route {
			t.Errorf("rules %+v: %s goes %s, want %s", tc.rules, tc.dst, d, tc.route)
		}
	}
	// The app's own listener is reached through the unspecified address too.
	p := mustNew(t, Rules{})
	f := flow(TCP, "0.0.0.0:8888", "")
	f.AppListens = true
	if d := p.Decide(f); d.Route != Sandbox {
		t.Errorf("0.0.0.0 to the app's own port goes %s, want sandbox", d)
	}
}
