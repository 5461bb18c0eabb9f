package uwu

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTransformReproducesTheSeedStory(t *testing.T) {
	in := "Hey, are you enjoying mirrord? Why not star us on github? It would be very cool of you."
	want := "hey, 🥺 awe you enjoying miwwowd?\n" +
		"why n-nyot staw us on g-github?\n" +
		"it wouwd b-be vewy coow o-of you."
	if got := Transform(in); got != want {
		t.Fatalf("Transform(seed sentence) =\n%s\nwant\n%s", got, want)
	}
}

func TestTransformIsDeterministic(t *testing.T) {
	in := "Hello, world! Nana, banana, really lovely. Another line, please."
	first := Transform(in)
	for i := 0; i < 20; i++ {
		if got := Transform(in); got != first {
			t.Fatalf("run %d gave %q, first run gave %q", i, got, first)
		}
	}
}

func TestTransformRules(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"r and l become w", "rolling", "wowwing"},
		{"n before a vowel becomes ny", "nap", "nyap"},
		{"n before a consonant stays", "and", "and"},
		{"lower case", "STAR", "staw"},
		{"digits and symbols pass through", "42 + 7 = 49", "42 + 7 = 49"},
		{"non-ASCII letters survive", "Grüße", "gwüße"},
		{"sentence ends start a new line", "Hi. Yo?", "hi.\nyo?"},
		{"trailing sentence end adds no line", "hi!  ", "hi!  "},
		{"decimal point is not a sentence end", "pi is 3.14", "pi is 3.14"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Transform(c.in)
			// Stutters are hash-chosen; strip one to compare the rules.
			if got != c.want && unstutter(got) != c.want {
				t.Fatalf("Transform(%q) = %q, want %q (stutters aside)", c.in, got, c.want)
			}
		})
	}
}

func TestTransformLeavesNoRorLAndKeepsValidUTF8(t *testing.T) {
	in := "Really, LOVELY rolls; Ärger über Lärm, ñandú. 🦀 Rust! Erlang?"
	got := Transform(in)
	if strings.ContainsAny(got, "rlRL") {
		t.Fatalf("Transform(%q) = %q still has r or l", in, got)
	}
	if !utf8.ValidString(got) {
		t.Fatalf("Transform(%q) = %q is not valid UTF-8", in, got)
	}
	if !strings.Contains(got, "🦀") {
		t.Fatalf("Transform(%q) = %q lost the emoji", in, got)
	}
}

func TestTransformStuttersSomeWordsButNotAll(t *testing.T) {
	words := strings.Repeat("beta gamma delta kappa sigma omega ", 10)
	got := Transform(words)
	n := strings.Count(got, "-")
	if n == 0 || n >= 60 {
		t.Fatalf("Transform stuttered %d of 60 words, want some but not all: %q", n, got)
	}
}

// unstutter removes a leading "x-" stutter from each word.
func unstutter(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = unstutterLine(l)
	}
	return strings.Join(lines, "\n")
}

func unstutterLine(s string) string {
	fields := strings.Split(s, " ")
	for i, f := range fields {
		r, size := utf8.DecodeRuneInString(f)
		if len(f) > size+1 && f[size] == '-' {
			if r2, _ := utf8.DecodeRuneInString(f[size+1:]); r2 == r {
				fields[i] = f[size+1:]
			}
		}
	}
	return strings.Join(fields, " ")
}
