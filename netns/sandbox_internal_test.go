package netns

import "testing"

func TestSandboxLinkValidation(t *testing.T) {
	for _, o := range []SandboxLink{{MTU: 1000}, {MTU: 70000}, {Name: "this-name-is-too-long"}, {Name: "a/b"}} {
		if _, err := o.withDefaults(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	o, err := SandboxLink{}.withDefaults()
	if err != nil || o.Name != LinkName || o.MTU != DefaultMTU {
		t.Errorf("defaults = %+v, %v", o, err)
	}
}
