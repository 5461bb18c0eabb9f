package config

import "testing"

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"outgoin", "outgoing", 1}, {"fitler", "filter", 1},
		{"stel", "steal", 1}, {"kitten", "sitting", 3}, {"ca", "abc", 3}, {"incomnig", "incoming", 1},
		{"héllo", "hello", 1},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := editDistance(tc.b, tc.a); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d (not symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	keys := []string{"tcp", "udp", "ignore_localhost", "filter", "unix_streams"}
	for word, want := range map[string]string{
		"tpc": "tcp", "UDP": "udp", "ignoreLocalhost": "ignore_localhost", "ignore-localhost": "ignore_localhost",
		"filters": "filter", "fitler": "filter", "unix_stream": "unix_streams",
		"ab": "", "xyz": "", "local": "", "ignore": "",
	} {
		if got := suggest(word, keys); got != want {
			t.Errorf("suggest(%q) = %q, want %q", word, got, want)
		}
	}
}
