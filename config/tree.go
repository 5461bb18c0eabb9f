package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v3"
)

// kind is the type of a value in the generic tree.
type kind int

const (
	kNull kind = iota
	kBool
	kNumber
	kString
	kList
	kObject
	kOther // a value of a type mirrord never uses (a TOML date, say); s describes it
)

// node is one value of a decoded file, the same for every format.
type node struct {
	kind kind
	b    bool
	s    string // string value, number as written, or kOther's description
	list []*node
	obj  map[string]*node
}

// describe renders the value for an error message.
func (n *node) describe() string {
	switch n.kind {
	case kNull:
		return "null"
	case kBool:
		return strconv.FormatBool(n.b)
	case kNumber:
		return n.s
	case kString:
		s := n.s
		if utf8.RuneCountInString(s) > 60 {
			s = string([]rune(s)[:57]) + "..."
		}
		return strconv.Quote(s)
	case kList:
		return "a list"
	case kObject:
		return "an object"
	}
	return n.s
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// parseTree decodes data into the generic tree, or reports syntax problems.
func parseTree(data []byte, format Format) (*node, []Problem) {
	data = bytes.TrimPrefix(data, utf8BOM)
	switch format {
	case JSON:
		return jsonTree(data)
	case YAML:
		return yamlTree(data)
	case TOML:
		return tomlTree(data)
	}
	return nil, []Problem{{Msg: fmt.Sprintf("format %d is not valid; valid: JSON, YAML, TOML", int(format))}}
}

func jsonTree(data []byte) (*node, []Problem) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, []Problem{{Line: 1, Col: 1, Msg: "the file is empty; an empty configuration is {}"}}
	}
	// Unmarshal first: it checks the whole input and gives exact offsets for syntax errors.
	var probe any
	if err := json.Unmarshal(data, &probe); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, []Problem{jsonSyntax(data, se)}
		}
		return nil, []Problem{{Msg: err.Error()}}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	n, p := jsonValue(dec, data, "")
	if p != nil {
		return nil, []Problem{*p}
	}
	return n, nil
}

// jsonValue reads one value from the token stream; it also catches duplicate keys, which
// encoding/json would silently let the last one win.
func jsonValue(dec *json.Decoder, data []byte, path string) (*node, *Problem) {
	tok, err := dec.Token()
	if err != nil {
		return nil, &Problem{Path: path, Msg: err.Error()}
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			n := &node{kind: kList}
			for i := 0; dec.More(); i++ {
				v, p := jsonValue(dec, data, indexPath(path, i))
				if p != nil {
					return nil, p
				}
				n.list = append(n.list, v)
			}
			_, _ = dec.Token() // the closing ']'
			return n, nil
		}
		n := &node{kind: kObject, obj: map[string]*node{}}
		for dec.More() {
			off := int(dec.InputOffset())
			kt, err := dec.Token()
			if err != nil {
				return nil, &Problem{Path: path, Msg: err.Error()}
			}
			key, _ := kt.(string)
			v, p := jsonValue(dec, data, joinPath(path, key))
			if p != nil {
				return nil, p
			}
			if _, dup := n.obj[key]; dup {
				// Point at the key itself: skip the separator and blanks before it.
				for off < len(data) && strings.ContainsRune(" \t\r\n,", rune(data[off])) {
					off++
				}
				line, col := position(data, off)
				return nil, &Problem{Path: joinPath(path, key), Line: line, Col: col,
					Msg: "duplicate key; each key may appear once in an object"}
			}
			n.obj[key] = v
		}
		_, _ = dec.Token() // the closing '}'
		return n, nil
	case string:
		return &node{kind: kString, s: t}, nil
	case json.Number:
		return &node{kind: kNumber, s: t.String()}, nil
	case bool:
		return &node{kind: kBool, b: t}, nil
	case nil:
		return &node{kind: kNull}, nil
	}
	return nil, &Problem{Path: path, Msg: fmt.Sprintf("unexpected token %v", tok)}
}

// jsonSyntax turns encoding/json's syntax error into a problem with a line, a column and, when
// the mistake is a common one, a hint.
func jsonSyntax(data []byte, se *json.SyntaxError) Problem {
	at := int(se.Offset) - 1 // encoding/json counts the offending byte as read
	if at < 0 {
		at = 0
	}
	if at > len(data) {
		at = len(data)
	}
	msg := se.Error()
	var r rune = -1
	if msg == "unexpected end of JSON input" {
		at = len(bytes.TrimRight(data, " \t\r\n"))
		msg = "unexpected end of the file; a closing } or ] or \" is missing"
	} else if at < len(data) {
		r, _ = utf8.DecodeRune(data[at:])
		// encoding/json names only the first byte of a multi-byte character ('â' for “).
		if strings.HasPrefix(msg, "invalid character ") {
			if i := strings.LastIndex(msg, "' "); i > 0 {
				msg = "invalid character " + describeRune(r) + " " + msg[i+2:]
			}
		}
	}
	line, col := position(data, at)
	hints := jsonHints(data, at, r, se.Error())
	hints = append(hints, fileHints(data, "JSON")...)
	if len(hints) > 0 {
		msg += "; hint: " + strings.Join(hints, "; ")
	}
	return Problem{Line: line, Col: col, Msg: msg}
}

func describeRune(r rune) string {
	if isTypographicQuote(r) {
		return string(r) + " (a typographic quote)"
	}
	return strconv.QuoteRune(r)
}

// jsonHints recognises the usual hand-editing mistakes at the offending character.
func jsonHints(data []byte, at int, r rune, msg string) []string {
	prev := prevNonSpace(data, at)
	switch {
	case r == '/':
		return []string{"JSON has no comments; remove // and /* */ comments"}
	case r == '\'':
		return []string{`JSON needs double quotes " around keys and strings, not '`}
	case (r == '}' || r == ']') && prev == ',':
		return []string{fmt.Sprintf("JSON allows no comma before %c; remove the trailing comma", r)}
	case strings.Contains(msg, "after top-level value"):
		return []string{"the file holds more than one JSON value; keep one object"}
	case strings.Contains(msg, "looking for beginning of object key string") && unicode.IsLetter(r):
		word := bareWord(data, at, " \t\r\n\":{},")
		if closesWithQuote(data, at+len(word)) {
			return []string{fmt.Sprintf("the key %s\" is missing its opening quote: write %q", word, word)}
		}
		return []string{fmt.Sprintf("keys need double quotes: write %q", word)}
	case strings.Contains(msg, "looking for beginning of value") && unicode.IsLetter(r):
		word := bareWord(data, at, " \t\r\n\",}]")
		switch word {
		case "True", "False", "TRUE", "FALSE", "yes", "no", "on", "off":
			return []string{"JSON's booleans are true and false"}
		case "None", "NULL", "Null", "nil", "undefined":
			return []string{"JSON's empty value is null"}
		}
		if closesWithQuote(data, at+len(word)) {
			return []string{fmt.Sprintf("the string %s\" is missing its opening quote: write %q", word, word)}
		}
		return []string{fmt.Sprintf("strings need double quotes: write %q", word)}
	case r == '"' && (strings.Contains(msg, "after object key:value pair") || strings.Contains(msg, "after array element")):
		return []string{"a comma is missing before this"}
	case strings.Contains(msg, "after object key") && !strings.Contains(msg, "key:value"):
		return []string{"a colon : must follow the key"}
	}
	return nil
}

// bareWord returns the text from data[at] up to the first byte in stops.
func bareWord(data []byte, at int, stops string) string {
	end := at
	for end < len(data) && !strings.ContainsRune(stops, rune(data[end])) {
		end++
	}
	return string(data[at:end])
}

func closesWithQuote(data []byte, i int) bool {
	return i < len(data) && data[i] == '"'
}

// fileHints notes things anywhere in the file that explain many syntax errors.
func fileHints(data []byte, format string) []string {
	var hints []string
	if q := typographicQuotes(data); q != "" {
		hints = append(hints, fmt.Sprintf("the file holds typographic quotes (%s); %s needs straight quotes \"", q, format))
	}
	if bytes.Contains(data, []byte("{{")) || bytes.Contains(data, []byte("{%")) {
		hints = append(hints, "mirrord's templates ({{ ... }}, {% ... %}) are not supported yet by trafficpolice; write the values literally")
	}
	return hints
}

func isTypographicQuote(r rune) bool {
	switch r {
	case '“', '”', '‘', '’', '„', '‟', '«', '»':
		return true
	}
	return false
}

// typographicQuotes lists where the file holds typographic quotes ("“ at 2:13, ” at 2:25").
func typographicQuotes(data []byte) string {
	var found []string
	line, col := 1, 1
	for _, r := range string(data) {
		if isTypographicQuote(r) {
			if len(found) == 6 {
				found = append(found, "...")
				break
			}
			found = append(found, fmt.Sprintf("%c at %d:%d", r, line, col))
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return strings.Join(found, ", ")
}

// position converts a byte offset into a 1-based line and a 1-based column in characters.
func position(data []byte, off int) (line, col int) {
	if off > len(data) {
		off = len(data)
	}
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	start := bytes.LastIndexByte(before, '\n') + 1
	return line, utf8.RuneCount(before[start:]) + 1
}

func prevNonSpace(data []byte, at int) byte {
	for i := at - 1; i >= 0; i-- {
		if !strings.ContainsRune(" \t\r\n", rune(data[i])) {
			return data[i]
		}
	}
	return 0
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlTree(data []byte) (*node, []Problem) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var v any
	err := dec.Decode(&v)
	if errors.Is(err, io.EOF) {
		return &node{kind: kNull}, nil // an empty file: all defaults
	}
	if err != nil {
		return nil, []Problem{yamlSyntax(data, err)}
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, []Problem{yamlSyntax(data, err)}
		}
		return nil, []Problem{{Msg: "the file holds more than one YAML document (---); keep one"}}
	}
	return fromAny(v), nil
}

func yamlSyntax(data []byte, err error) Problem {
	p := Problem{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Msg = m[2]
	}
	var hints []string
	if bytes.Contains(data, []byte("\n\t")) || bytes.HasPrefix(data, []byte("\t")) {
		hints = append(hints, "YAML indents with spaces, not tabs")
	}
	hints = append(hints, fileHints(data, "YAML")...)
	if len(hints) > 0 {
		p.Msg += "; hint: " + strings.Join(hints, "; ")
	}
	return p
}

func tomlTree(data []byte) (*node, []Problem) {
	var v map[string]any
	if _, err := toml.Decode(string(data), &v); err != nil {
		p := Problem{Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p = Problem{Line: pe.Position.Line, Col: pe.Position.Col, Msg: pe.Message}
		}
		if hints := fileHints(data, "TOML"); len(hints) > 0 {
			p.Msg += "; hint: " + strings.Join(hints, "; ")
		}
		return nil, []Problem{p}
	}
	return fromAny(v), nil
}

// fromAny converts what the YAML and TOML libraries decode into the generic tree.
func fromAny(v any) *node {
	switch x := v.(type) {
	case nil:
		return &node{kind: kNull}
	case bool:
		return &node{kind: kBool, b: x}
	case string:
		return &node{kind: kString, s: x}
	case int:
		return &node{kind: kNumber, s: strconv.Itoa(x)}
	case int64:
		return &node{kind: kNumber, s: strconv.FormatInt(x, 10)}
	case uint64:
		return &node{kind: kNumber, s: strconv.FormatUint(x, 10)}
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return &node{kind: kOther, s: strconv.FormatFloat(x, 'g', -1, 64)}
		}
		return &node{kind: kNumber, s: strconv.FormatFloat(x, 'g', -1, 64)}
	case []any:
		n := &node{kind: kList}
		for _, e := range x {
			n.list = append(n.list, fromAny(e))
		}
		return n
	case []map[string]any: // a TOML array of tables
		n := &node{kind: kList}
		for _, e := range x {
			n.list = append(n.list, fromAny(e))
		}
		return n
	case map[string]any:
		n := &node{kind: kObject, obj: make(map[string]*node, len(x))}
		for k, e := range x {
			n.obj[k] = fromAny(e)
		}
		return n
	case map[any]any: // YAML with keys that are not strings
		n := &node{kind: kObject, obj: make(map[string]*node, len(x))}
		for k, e := range x {
			n.obj[fmt.Sprint(k)] = fromAny(e)
		}
		return n
	case time.Time:
		return &node{kind: kOther, s: fmt.Sprintf("the date/time %v", x)}
	}
	return &node{kind: kOther, s: fmt.Sprintf("a value of type %T", v)}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}
