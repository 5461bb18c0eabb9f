package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Load reads the configuration file at path; its extension picks the format (FormatForPath).
// Every error starts with the path; an *Error lists all problems found.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: cannot %s the configuration file: %w", path, pe.Op, pe.Err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c, err := Parse(data, FormatForPath(path))
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = path
			return nil, ce
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads a configuration in the given format, fills in mirrord's defaults and validates
// the result. Its errors are *Error values listing every problem found. Keys of mirrord's
// that trafficpolice does not honour but can run without are listed in the result's Ignored.
func Parse(data []byte, format Format) (*Config, error) {
	tree, probs := parseTree(data, format)
	if len(probs) > 0 {
		return nil, &Error{Problems: probs}
	}
	d := &decoder{}
	c := Default()
	d.decode(tree, c)
	if len(d.probs) > 0 {
		sortProblems(d.probs)
		return nil, &Error{Problems: d.probs}
	}
	// Values are checked only once the shape is right, so that one mistake is reported once.
	if err := c.Validate(); err != nil {
		return nil, err
	}
	sortIgnored(d.ignored)
	c.Ignored = d.ignored
	return c, nil
}
