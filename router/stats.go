package router

import "sync/atomic"

// Stats counts flows by route.
type Stats struct {
	tcpFlows, udpFlows, dnsQueries, blocked, failed atomic.Int64
	// dnsCached counts the queries answered from the DNS cache.
	dnsCached atomic.Int64
	open      atomic.Int64
	// synsDropped counts the app's SYNs dropped because too many dials
	// were pending to their destination (the app retransmits them).
	synsDropped atomic.Int64
	// kernelSockets counts the TCP flows taken as kernel sockets (of
	// tcpFlows); strangers the connections at their listener that no
	// flow waited for.
	kernelSockets, strangers atomic.Int64
	// kernelSocketsSkipped counts the SYNs left to the netstack because
	// the router neared its open-file limit.
	kernelSocketsSkipped atomic.Int64
}

// StatsSnapshot is a copy of Stats at one moment.
type StatsSnapshot struct {
	TCPFlows, UDPFlows, DNSQueries, Blocked, Failed, Open int64
	// DNSCached counts the DNS queries answered from the cache (of
	// DNSQueries).
	DNSCached int64
	// SYNsDropped counts the app's connection attempts dropped, to be
	// retransmitted by the app, because too many dials were pending: to
	// their destination, or in all (the netstack's forwarder limit).
	SYNsDropped int64
	// KernelSockets counts the TCP flows taken as kernel sockets (of
	// TCPFlows; see KernelSockets), Strangers the connections to their
	// listener that no flow waited for (reset at once).
	KernelSockets, Strangers int64
	// KernelSocketsSkipped counts the connections left to the netstack
	// because the router neared its open-file limit.
	KernelSocketsSkipped int64
}

func (s *Stats) snapshot() StatsSnapshot {
	return StatsSnapshot{
		TCPFlows: s.tcpFlows.Load(), UDPFlows: s.udpFlows.Load(), DNSQueries: s.dnsQueries.Load(),
		DNSCached: s.dnsCached.Load(),
		Blocked:   s.blocked.Load(), Failed: s.failed.Load(), Open: s.open.Load(),
		SYNsDropped:   s.synsDropped.Load(),
		KernelSockets: s.kernelSockets.Load(), Strangers: s.strangers.Load(),
		KernelSocketsSkipped: s.kernelSocketsSkipped.Load(),
	}
}
