package router

import (
	"time"

	"golang.org/x/net/icmp"
)

// SetKeepAliveAfter sets keepAliveAfter until restore is called.
func SetKeepAliveAfter(d time.Duration) (restore func()) {
	old := keepAliveAfter
	keepAliveAfter = d
	return func() { keepAliveAfter = old }
}

// CountICMPSockets makes the router count the ICMP sockets it opens on
// the host, by kind ("ip4:icmp" raw, "udp4" datagram, ...), until the
// test ends.
func CountICMPSockets(cleanup func(func())) func() map[string]int {
	var mu = make(chan struct{}, 1)
	counts := map[string]int{}
	orig := listenICMP
	listenICMP = func(network, address string) (*icmp.PacketConn, error) {
		mu <- struct{}{}
		counts[network]++
		<-mu
		return orig(network, address)
	}
	cleanup(func() { listenICMP = orig })
	return func() map[string]int {
		mu <- struct{}{}
		defer func() { <-mu }()
		out := map[string]int{}
		for k, v := range counts {
			out[k] = v
		}
		return out
	}
}
