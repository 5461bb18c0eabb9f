package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// ErrEnvUnsupported is returned by Env when the agent predates the Env
// request (it closes the stream without an answer).
var ErrEnvUnsupported = errors.New("the agent cannot report the target's environment (an older agent?)")

// Env returns the environment of the target's process, as the pod's app
// sees it: what the image, the spec and the downward API put there.
func (c *Client) Env(ctx context.Context) (map[string]string, error) {
	st, _, res, err := c.request(ctx, proto.Env{}, nil)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %w", ErrEnvUnsupported, err)
		}
		return nil, err
	}
	_ = st.Close()
	if res.Class != proto.ClassOK {
		return nil, &RemoteError{Class: res.Class, Message: res.Message}
	}
	vars, err := proto.DecodeEnv(res.Data)
	if err != nil {
		return nil, fmt.Errorf("the agent's answer to Env: %w", err)
	}
	env := make(map[string]string, len(vars))
	for _, v := range vars {
		k, val, _ := strings.Cut(v, "=")
		env[k] = val // later entries win, as getenv's callers usually see
	}
	return env, nil
}
