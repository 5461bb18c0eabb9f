package container

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Mount binds a host path into the container.
type Mount struct {
	// Source is the host path, Destination the path inside; both absolute.
	Source, Destination string
	ReadOnly            bool
}

// ParseMount reads SRC:DST[:ro|rw], the form of --mount. A relative SRC is
// taken from the current folder.
func ParseMount(s string) (Mount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Mount{}, fmt.Errorf("--mount %q is invalid: want SRC:DST or SRC:DST:ro, e.g. ./data:/data:ro", s)
	}
	m := Mount{Source: parts[0], Destination: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return Mount{}, fmt.Errorf("--mount %q has option %q: want ro or rw", s, parts[2])
		}
	}
	if !filepath.IsAbs(m.Destination) {
		return Mount{}, fmt.Errorf("--mount %q: destination %q is not an absolute path inside the container", s, m.Destination)
	}
	src, err := filepath.Abs(m.Source)
	if err != nil {
		return Mount{}, fmt.Errorf("--mount %q: source %q: %w", s, m.Source, err)
	}
	m.Source = src
	m.Destination = filepath.Clean(m.Destination)
	return m, nil
}

// String gives the --mount form back.
func (m Mount) String() string {
	s := m.Source + ":" + m.Destination
	if m.ReadOnly {
		s += ":ro"
	}
	return s
}
