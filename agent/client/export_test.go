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

// BreakDNSStream ends the DNS stream of c's current tunnel as a protocol
// error would, leaving the tunnel up. For tests only.
func BreakDNSStream(c *Client) error {
	c.mu.Lock()
	t := c.cur
	c.mu.Unlock()
	if t == nil || t.dns == nil {
		return errors.New("no DNS stream")
	}
	t.dns.end(errors.New("broken by the test"))
	return nil
}
