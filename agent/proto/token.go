package proto

import (
	"fmt"
	"os"
	"strings"
)

// EnvToken is the environment variable that carries the shared token when
// no token file is given, at both ends of the tunnel.
const EnvToken = "TRAFFICPOLICE_AGENT_TOKEN"

// LoadToken returns the shared token: the content of path (surrounding
// white space trimmed) when path is not empty, else $TRAFFICPOLICE_AGENT_TOKEN.
// No token at all is an error: an agent without one would serve anybody.
func LoadToken(path string) (string, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read agent token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("agent token file %s is empty: put the shared token in it", path)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(os.Getenv(EnvToken)); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("no agent token: pass --token-file FILE or set %s", EnvToken)
}
