package router

import "sync/atomic"

// Stats counts flows by route.
type Stats struct {
	tcpFlows, udpFlows, dnsQueries, blocked, failed atomic.Int64
	open                                            atomic.Int64
}

// StatsSnapshot is a copy of Stats at one moment.
type StatsSnapshot struct {
	TCPFlows, UDPFlows, DNSQueries, Blocked, Failed, Open int64
}

func (s *Stats) snapshot() StatsSnapshot {
	return StatsSnapshot{
		TCPFlows: s.tcpFlows.Load(), UDPFlows: s.udpFlows.Load(), DNSQueries: s.dnsQueries.Load(),
		Blocked: s.blocked.Load(), Failed: s.failed.Load(), Open: s.open.Load(),
	}
}
