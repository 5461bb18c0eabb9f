package config

import (
	"fmt"
	"sort"
	"strings"
)

// maxProblems caps how many problems one Error lists; the rest are counted.
const maxProblems = 25

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Path is the key path in mirrord's names, such as
	// "feature.network.outgoing.filter.local[2]"; empty for syntax errors.
	Path string
	// Line and Col locate a syntax error (1-based); 0 when unknown.
	Line, Col int
	// Msg says what is wrong and, where it can, what would be valid.
	Msg string
}

// String formats the problem as "LINE:COL: PATH: MSG", leaving out what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "%d:", p.Line)
		if p.Col > 0 {
			fmt.Fprintf(&b, "%d:", p.Col)
		}
		b.WriteString(" ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error lists every problem found in one configuration, one per line.
type Error struct {
	// File is the configuration file's path; empty when the configuration came from bytes.
	File     string
	Problems []Problem
}

// Error implements error. Each line starts with the file's path when it is known.
func (e *Error) Error() string {
	var lines []string
	for i, p := range e.Problems {
		if i == maxProblems {
			lines = append(lines, e.prefix(Problem{Msg: fmt.Sprintf("... and %d more problems", len(e.Problems)-i)}))
			break
		}
		lines = append(lines, e.prefix(p))
	}
	return strings.Join(lines, "\n")
}

func (e *Error) prefix(p Problem) string {
	s := p.String()
	switch {
	case e.File == "":
		return s
	case p.Line > 0:
		return e.File + ":" + s
	default:
		return e.File + ": " + s
	}
}

// sortProblems orders problems by key path so that every format reports them alike; syntax
// problems (no path) keep their place at the front.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Path < ps[j].Path })
}
