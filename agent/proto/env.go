package proto

import (
	"bytes"
	"fmt"
	"strings"
)

// MaxEnvSize bounds an encoded environment: what fits in a Result's Data
// beside its class and an empty message.
const MaxEnvSize = MaxBodySize - 3

// EncodeEnv encodes an environment for a Result's Data the way
// /proc/PID/environ holds it: each KEY=VALUE entry followed by a NUL byte.
func EncodeEnv(vars []string) ([]byte, error) {
	var b []byte
	for i, v := range vars {
		if err := checkEnvEntry(v); err != nil {
			return nil, fmt.Errorf("environment entry %d %q: %w", i, v, err)
		}
		b = append(append(b, v...), 0)
	}
	if len(b) > MaxEnvSize {
		return nil, fmt.Errorf("environment of %d entries is %d bytes: at most %d fit in one Result", len(vars), len(b), MaxEnvSize)
	}
	return b, nil
}

// DecodeEnv is the inverse of EncodeEnv. Data that does not end with a NUL
// byte, or an entry without "=" or with an empty name, is an error.
func DecodeEnv(data []byte) ([]string, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if data[len(data)-1] != 0 {
		return nil, fmt.Errorf("environment of %d bytes does not end with a NUL byte: every KEY=VALUE entry must", len(data))
	}
	parts := bytes.Split(data[:len(data)-1], []byte{0})
	out := make([]string, 0, len(parts))
	for i, p := range parts {
		v := string(p)
		if err := checkEnvEntry(v); err != nil {
			return nil, fmt.Errorf("environment entry %d %q: %w", i, v, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func checkEnvEntry(v string) error {
	if strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("holds a NUL byte: entries are KEY=VALUE without NUL")
	}
	if i := strings.IndexByte(v, '='); i <= 0 {
		return fmt.Errorf("is not KEY=VALUE with a non-empty KEY")
	}
	return nil
}
