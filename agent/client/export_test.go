package client

import (
	"context"
	"errors"
)

// DNSMode says how c's current tunnel resolves, once its DNS stream is
// negotiated (it waits for that, up to ctx): "stream", every query on the
// tunnel's one DNS stream, or "per-query", a stream each (an older agent).
// For tests only.
func DNSMode(ctx context.Context, c *Client) (string, error) {
	c.mu.Lock()
	t := c.cur
	c.mu.Unlock()
	if t == nil {
		return "", errors.New("no tunnel")
	}
	s, err := t.dnsStream(ctx)
	if err != nil {
		return "", err
	}
	if s == nil {
		return "per-query", nil
	}
	return "stream", nil
}
