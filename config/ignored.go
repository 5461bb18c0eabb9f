package config

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Ignored is a key of mirrord's format that the file sets and trafficpolice does not honour,
// where the run can go on without it: the file loads, and the command line prints one warning
// per key (or refuses them all with --strict, through Strict).
type Ignored struct {
	Path  string // the key's path, such as "feature.fs"
	Value string // the value as written, shortened: "read", true, {"mode":"write",...}
	Means string // what the run does instead: "the app reads the local file system"
}

// String formats the warning: `feature.fs "read": ignored — the app reads the local file system`.
func (w Ignored) String() string {
	return fmt.Sprintf("%s %s: ignored — %s", w.Path, w.Value, w.Means)
}

// Strict refuses the keys that Parse ignored: an *Error with one problem per key, or nil when
// there is none. The caller may set the error's File.
func (c *Config) Strict() error {
	if len(c.Ignored) == 0 {
		return nil
	}
	probs := make([]Problem, len(c.Ignored))
	for i, w := range c.Ignored {
		probs[i] = Problem{Path: w.Path, Msg: fmt.Sprintf("%s is not honoured by trafficpolice (%s); strict mode refuses it: remove the key", w.Value, w.Means)}
	}
	return &Error{Problems: probs}
}

func sortIgnored(ws []Ignored) {
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].Path < ws[j].Path })
}

// maxValueRunes bounds how much of a value a warning shows.
const maxValueRunes = 48

// compact renders a value on one line, as JSON, shortened to maxValueRunes.
func (n *node) compact() string {
	var s string
	switch n.kind {
	case kString:
		s = strconv.Quote(n.s)
	case kNumber:
		s = n.s
	default:
		b, err := json.Marshal(n.plain())
		if err != nil {
			return n.describe()
		}
		s = string(b)
	}
	if utf8.RuneCountInString(s) > maxValueRunes {
		s = string([]rune(s)[:maxValueRunes-1]) + "…"
	}
	return s
}

// plain turns the node into the Go value encoding/json writes.
func (n *node) plain() any {
	switch n.kind {
	case kBool:
		return n.b
	case kNumber:
		return json.Number(n.s)
	case kString:
		return n.s
	case kList:
		out := make([]any, len(n.list))
		for i, e := range n.list {
			out[i] = e.plain()
		}
		return out
	case kObject:
		out := make(map[string]any, len(n.obj))
		for k, v := range n.obj {
			out[k] = v.plain()
		}
		return out
	case kOther:
		return strings.TrimSpace(n.s)
	}
	return nil
}
