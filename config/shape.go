package config

import (
	"math"
	"slices"
	"strconv"
	"strings"
)

// shape is what JSON values a key of mirrord's format may hold: one of its alternatives.
// The JSON Schema is written from it (Schema); the decoder checks against it the keys that it
// does not decode itself (no-op, ignored and refused keys). Keys it decodes it checks by
// hand, with errors that say more. A nil shape takes any value.
type shape []alt

// alt is one JSON type a value may have, with its constraints.
type alt struct {
	t      string   // "boolean", "integer", "string", "array" or "object"
	enum   []string // string: only these values
	lo, hi int64    // integer: the range
	length int      // array: exactly this many elements (0: any number)
	items  shape    // array: each element's shape
	fields []field  // object: its keys, nothing else; nil: any keys
	values shape    // object without fields: each value's shape
}

// Shapes the key table is written with.
var (
	aBool      = alt{t: "boolean"}
	aString    = alt{t: "string"}
	aList      = alt{t: "array"}
	aObject    = alt{t: "object"}
	aStrings   = alt{t: "array", items: shape{aString}}
	aPort      = alt{t: "integer", lo: 1, hi: math.MaxUint16}
	aPorts     = alt{t: "array", items: shape{aPort}}
	sBool      = shape{aBool}
	sString    = shape{aString}
	sObject    = shape{aObject}
	sList      = shape{aList}
	sWhole     = shape{alt{t: "integer", lo: 0, hi: math.MaxInt64}}
	sStrOrList = shape{aString, aStrings}
	sPorts     = shape{aPort, aPorts}
	sAny       shape
)

func anEnum(values ...string) alt { return alt{t: "string", enum: values} }

func anObjectOf(fields []field) alt { return alt{t: "object", fields: fields} }

func aWhole(lo, hi int64) alt { return alt{t: "integer", lo: lo, hi: hi} }

// accepts says whether n has this shape. Null is never accepted here: members skips it as
// "not set" before asking.
func (s shape) accepts(n *node) bool {
	if s == nil {
		return true
	}
	return slices.ContainsFunc(s, func(a alt) bool { return a.accepts(n) })
}

func (a alt) accepts(n *node) bool {
	switch a.t {
	case "boolean":
		return n.kind == kBool
	case "string":
		return n.kind == kString && (a.enum == nil || slices.Contains(a.enum, n.s))
	case "integer":
		if n.kind != kNumber {
			return false
		}
		f, err := strconv.ParseFloat(n.s, 64)
		return err == nil && f == math.Trunc(f) && f >= float64(a.lo) && f <= float64(a.hi)
	case "array":
		if n.kind != kList || (a.length > 0 && len(n.list) != a.length) {
			return false
		}
		for _, e := range n.list {
			if !a.items.accepts(e) {
				return false
			}
		}
		return true
	case "object":
		if n.kind != kObject {
			return false
		}
		for k, v := range n.obj {
			switch {
			case a.fields != nil:
				i := slices.IndexFunc(a.fields, func(f field) bool { return f.name == k })
				if i < 0 || (v.kind != kNull && !a.fields[i].value.accepts(v)) {
					return false
				}
			case !a.values.accepts(v):
				return false
			}
		}
		return true
	}
	return false
}

// want describes the valid values for an error message: "true or false", "a string or a
// list of strings", `"abort", "continue" or "override"`.
func (s shape) want() string {
	var terms []string
	for _, a := range s {
		terms = append(terms, a.terms()...)
	}
	switch len(terms) {
	case 0:
		return "any value"
	case 1:
		return terms[0]
	}
	return strings.Join(terms[:len(terms)-1], ", ") + " or " + terms[len(terms)-1]
}

func (a alt) terms() []string {
	switch a.t {
	case "boolean":
		return []string{"true", "false"}
	case "string":
		if a.enum == nil {
			return []string{"a string"}
		}
		q := make([]string, len(a.enum))
		for i, v := range a.enum {
			q[i] = strconv.Quote(v)
		}
		return q
	case "integer":
		if a.hi == math.MaxInt64 {
			return []string{"a whole number from " + strconv.FormatInt(a.lo, 10)}
		}
		return []string{"a whole number from " + strconv.FormatInt(a.lo, 10) + " to " + strconv.FormatInt(a.hi, 10)}
	case "array":
		if len(a.items) == 1 && a.items[0].t == "string" && a.items[0].enum == nil {
			return []string{"a list of strings"}
		}
		return []string{"a list"}
	}
	return []string{"an object"}
}
