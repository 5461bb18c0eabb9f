package cluster

import (
	"strings"
	"testing"
)

func TestPodNamesMustBeDNSLabels(t *testing.T) {
	for _, ok := range []string{"uwu-service", "a", "messages-db", "x1"} {
		if err := validPodName(ok); err != nil {
			t.Errorf("validPodName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "Uwu", "-a", "a-", "a_b", "a.b", strings.Repeat("a", 64), "dns"} {
		err := validPodName(bad)
		if err == nil || !strings.Contains(err.Error(), "\""+bad+"\"") {
			t.Errorf("validPodName(%q) = %v, want an error naming it", bad, err)
		}
	}
}

func TestRecordNamesAndTexts(t *testing.T) {
	got, err := validDNSName("SRV name", "_http._tcp.uwu-service.default.svc.cluster.local.")
	if err != nil || got != "_http._tcp.uwu-service.default.svc.cluster.local" {
		t.Errorf("validDNSName(SRV name with trailing dot) = %q, %v", got, err)
	}
	for _, bad := range []string{"", ".", "a..b", "a b", "-a.b", strings.Repeat("a", 64) + ".x", "a,b"} {
		if _, err := validDNSName("name", bad); err == nil || !strings.Contains(err.Error(), "name") {
			t.Errorf("validDNSName(%q) = %v, want an error naming the field", bad, err)
		}
	}
	if err := validTXT("v=spf1 a, b"); err != nil {
		t.Errorf("validTXT(plain text with comma) = %v", err)
	}
	for _, bad := range []string{`say "hi"`, `back\slash`, "new\nline", strings.Repeat("x", 256), "ünïcode"} {
		if err := validTXT(bad); err == nil {
			t.Errorf("validTXT(%q) = nil, want an error", bad)
		}
	}
}

func TestAddressesFollowThePodNumber(t *testing.T) {
	if got := ip4For(12).String(); got != "10.244.0.12" {
		t.Errorf("ip4For(12) = %s", got)
	}
	if got := ip6For(12).String(); got != "fd10:244::12" {
		t.Errorf("ip6For(12) = %s", got)
	}
	if !subnet6.Contains(ip6For(254)) || !subnet4.Contains(ip4For(254)) {
		t.Errorf("pod 254's addresses %s, %s fall outside the subnets", ip4For(254), ip6For(254))
	}
}
