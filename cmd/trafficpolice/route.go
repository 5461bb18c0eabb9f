package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/sandbox"
)

func newRouteCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "route", Short: "Explain routing decisions"}
	var (
		file    string
		extra   sandbox.ExtraRules
		noAgent bool
	)
	explain := &cobra.Command{
		Use:   "explain [-f FILE] DEST",
		Short: "Say where a destination would go (local, remote or block) and which rule decided",
		Long: "Say where a destination would go and which rule decided.\n\n" +
			"DEST is [tcp|udp://]host-or-ip[:port], e.g. app-db:5432, udp://10.0.0.10:53, [::1]:8080.\n" +
			"A hostname also shows which side resolves it. Unless --no-agent is given, an agent or\n" +
			"target is assumed to be configured, as in a real run against a cluster.",
		Example: "  trafficpolice route explain -f config.json --local :8888 127.0.0.1:8888\n" +
			"  trafficpolice route explain -f config.json uwu-service:80",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(file)
			if err != nil {
				return err
			}
			p, err := sandbox.Policy(cfg, extra, !noAgent)
			if err != nil {
				return err
			}
			d, err := parseDest(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			flow := policy.Flow{Proto: d.proto, Dst: netip.AddrPortFrom(d.addr, d.port), Host: d.host}
			if d.host != "" {
				side := p.ResolveSide(d.host)
				where := "the cluster's DNS, through the agent"
				if side.Route == policy.Local {
					where = "the host's resolver (its /etc/hosts too)"
				}
				fmt.Fprintf(w, "resolve: %s (%s) by %s\n", side.Route, side.Rule, where)
				if d.host == "localhost" {
					flow.Dst = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), d.port)
				}
			}
			dec := p.Decide(flow)
			fmt.Fprintf(w, "route:   %s\n", dec.Route)
			fmt.Fprintf(w, "rule:    %s\n", dec.Rule)
			if d.host != "" && !flow.Dst.Addr().IsValid() {
				fmt.Fprintln(w, "note:    the address is not known here, so only hostname, port and protocol rules applied")
			}
			return nil
		},
	}
	f := explain.Flags()
	f.StringVarP(&file, "file", "f", "", "configuration file")
	f.StringArrayVar(&extra.Local, "local", nil, "add a local filter rule (repeatable)")
	f.StringArrayVar(&extra.Remote, "remote", nil, "add a remote filter rule (repeatable)")
	f.StringArrayVar(&extra.Block, "block", nil, "add a block rule (repeatable)")
	f.BoolVar(&noAgent, "no-agent", false, "explain a run with no agent or target (default routes go local)")
	cmd.AddCommand(explain)
	return cmd
}

type dest struct {
	proto policy.Proto
	host  string
	addr  netip.Addr
	port  uint16
}

// parseDest reads DEST: [tcp|udp://]host-or-ip[:port]. TCP by default.
func parseDest(s string) (dest, error) {
	d := dest{proto: policy.TCP}
	rest := s
	if i := strings.Index(rest, "://"); i >= 0 {
		p, err := policy.ParseProto(rest[:i])
		if err != nil || p == policy.AnyProto {
			return d, fmt.Errorf("DEST %q: protocol must be tcp or udp", s)
		}
		d.proto, rest = p, rest[i+3:]
	}
	host, portStr := rest, ""
	if ap, err := netip.ParseAddrPort(rest); err == nil {
		d.addr, d.port = ap.Addr().Unmap(), ap.Port()
		return d, nil
	}
	if a, err := netip.ParseAddr(strings.Trim(rest, "[]")); err == nil {
		d.addr = a.Unmap()
		return d, nil
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		host, portStr = rest[:i], rest[i+1:]
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || p == 0 {
			return d, fmt.Errorf("DEST %q: port %q is not a number from 1 to 65535", s, portStr)
		}
		d.port = uint16(p)
	}
	if host == "" {
		return d, fmt.Errorf("DEST %q: give a host or IP, as in app-db:5432 or 10.0.0.1:80", s)
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		d.addr = a.Unmap()
		return d, nil
	}
	if _, err := policy.ParseEntry(host); err != nil {
		return d, fmt.Errorf("DEST %q: %w", s, err)
	}
	d.host = strings.ToLower(strings.TrimSuffix(host, "."))
	return d, nil
}
