package client

import (
	"context"
	"errors"
	"io"

	"github.com/trafficpolice/trafficpolice/agent/proto"
)

// Retire asks the agent to leave once this client is gone, which it agrees
// to only when this client is the only one connected: then left is true,
// the agent takes no new client and exits when this one closes, and the
// caller removes what started it. Otherwise why says what keeps it (other
// clients, or an agent not started for runs). An agent older than Retire
// closes the stream: left is false, and it exits by itself once idle.
func (c *Client) Retire(ctx context.Context) (left bool, why string, err error) {
	st, _, res, err := c.request(ctx, proto.Retire{}, nil)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return false, "the agent does not know Retire (an older agent): it exits by itself once idle", nil
		}
		return false, "", err
	}
	_ = st.Close()
	if res.Class != proto.ClassOK {
		return false, res.Message, nil
	}
	return true, "", nil
}
