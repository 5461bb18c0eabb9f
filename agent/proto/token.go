package proto

import (
	"fmt"
	"os"
	"strings"
)

// EnvToken is the environment variable that carries the shared token when
// no token file is given, at both ends of the tunnel.
const EnvToken = "TRAFFICPOLICE_AGENT_TOKEN"

// LoadToken returns the shared token: the first line of path (surrounding
// white space trimmed) when path is not empty, else $TRAFFICPOLICE_AGENT_TOKEN.
// No token at all is an error: an agent without one would serve anybody.
// A second line, the agent's fingerprint for clients (see LoadTokenFile),
// is not part of the token, so that one file serves both ends.
func LoadToken(path string) (string, error) {
	tok, _, err := LoadTokenFile(path)
	return tok, err
}

// LoadTokenFile is LoadToken that also returns the token file's second
// line, the agent's key fingerprint a client pins ("" when the file has
// none, or when the token comes from the environment). It is returned as
// written: the caller parses it.
func LoadTokenFile(path string) (token, fingerprint string, err error) {
	if path == "" {
		if tok := strings.TrimSpace(os.Getenv(EnvToken)); tok != "" {
			return tok, "", nil
		}
		return "", "", fmt.Errorf("no agent token: pass --token-file FILE or set %s", EnvToken)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("read agent token file: %w", err)
	}
	var lines []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	switch len(lines) {
	case 0:
		return "", "", fmt.Errorf("agent token file %s is empty: put the shared token in it", path)
	case 1:
		return lines[0], "", nil
	case 2:
		return lines[0], lines[1], nil
	}
	return "", "", fmt.Errorf("agent token file %s has %d lines: want the shared token, and optionally the agent's fingerprint (sha256:...) on a second line", path, len(lines))
}
