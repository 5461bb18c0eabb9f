package incoming

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// httpFilter is a compiled proto.HTTPFilter; nil matches every request
// (no filter: whole connections).
type httpFilter struct {
	kind    proto.FilterKind
	re      *regexp.Regexp
	method  string
	members []*httpFilter
	text    string // for people: what the client asked for
}

// compileFilter compiles f; FilterNone gives nil. Errors name the part of
// the filter that is wrong.
func compileFilter(f proto.HTTPFilter) (*httpFilter, error) {
	if f.Kind == proto.FilterNone {
		return nil, nil
	}
	return compileFilterAt(f, "http_filter")
}

func compileFilterAt(f proto.HTTPFilter, path string) (*httpFilter, error) {
	c := &httpFilter{kind: f.Kind}
	switch f.Kind {
	case proto.FilterHeader, proto.FilterPath:
		expr := f.Pattern
		if f.Kind == proto.FilterHeader {
			expr = "(?i)" + expr // header names are case-insensitive
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, fmt.Errorf("%s: %s filter %q is not a valid regular expression: %w", path, f.Kind, f.Pattern, err)
		}
		c.re = re
		c.text = fmt.Sprintf("%s %q", f.Kind, f.Pattern)
	case proto.FilterMethod:
		if f.Pattern == "" || !isToken([]byte(f.Pattern)) {
			return nil, fmt.Errorf("%s: method filter %q is not an HTTP method name such as GET", path, f.Pattern)
		}
		c.method = f.Pattern
		c.text = fmt.Sprintf("method %q", f.Pattern)
	case proto.FilterAllOf, proto.FilterAnyOf:
		if len(f.Filters) == 0 {
			return nil, fmt.Errorf("%s: %s has no member filters: give at least one", path, f.Kind)
		}
		var texts []string
		for i, m := range f.Filters {
			if m.Kind == proto.FilterNone {
				return nil, fmt.Errorf("%s.%s[%d]: an empty filter: give a header, path or method", path, f.Kind, i)
			}
			cm, err := compileFilterAt(m, fmt.Sprintf("%s.%s[%d]", path, f.Kind, i))
			if err != nil {
				return nil, err
			}
			c.members = append(c.members, cm)
			texts = append(texts, cm.text)
		}
		c.text = fmt.Sprintf("%s(%s)", f.Kind, strings.Join(texts, ", "))
	default:
		return nil, fmt.Errorf("%s: filter kind %d is unknown", path, f.Kind)
	}
	return c, nil
}

// matches reports whether the request head satisfies the filter.
func (f *httpFilter) matches(h *requestHead) bool {
	if f == nil {
		return true
	}
	switch f.kind {
	case proto.FilterHeader:
		for _, l := range h.headers {
			if f.re.MatchString(l.name + ": " + l.value) {
				return true
			}
		}
		return false
	case proto.FilterPath:
		return f.re.MatchString(h.path)
	case proto.FilterMethod:
		return strings.EqualFold(h.method, f.method)
	case proto.FilterAllOf:
		for _, m := range f.members {
			if !m.matches(h) {
				return false
			}
		}
		return true
	case proto.FilterAnyOf:
		for _, m := range f.members {
			if m.matches(h) {
				return true
			}
		}
	}
	return false
}

func (f *httpFilter) String() string {
	if f == nil {
		return "whole connections"
	}
	return f.text
}
