package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trafficpolice/trafficpolice/router/policy"
	"github.com/trafficpolice/trafficpolice/sandbox"
)

// exitBlocked is route explain's status for a destination the policy
// blocks, so that scripts can test a policy.
const exitBlocked = 1

func newRouteCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "route",
		Short:   "Explain routing decisions",
		Example: "  trafficpolice route explain -f config.json app-db:5432",
	}
	var (
		cf      configFlags
		extra   sandbox.ExtraRules
		noAgent bool
		out     outputFlag
	)
	explain := &cobra.Command{
		Use:   "explain [-f FILE] [-o json] DEST",
		Short: "Say where a destination would go (local, remote or block) and which rule decided",
		Long: "Say where a destination would go and which rule decided.\n\n" +
			"DEST is [tcp|udp://]host-or-ip[:port], e.g. app-db:5432, udp://10.0.0.10:53, [::1]:8080.\n" +
			"A hostname also shows which side resolves it. Unless --no-agent is given, an agent or\n" +
			"target is assumed to be configured, as in a real run against a cluster. Without -f,\n" +
			defaultConfigFile + " is read when it exists.\n\n" +
			"Exits 1 when DEST would be blocked, 0 when it would go local or remote, 125 on error.",
		Example: "  trafficpolice route explain -f config.json --local :8888 127.0.0.1:8888\n" +
			"  trafficpolice route explain -f config.json uwu-service:80\n" +
			"  trafficpolice route explain -o json --block prod-db prod-db:5432 || echo blocked",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			cfg, err := cf.load(cmd.ErrOrStderr())
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
			e := explainDest(p, d)
			if asJSON {
				err = writeJSON(cmd.OutOrStdout(), e)
			} else {
				e.print(cmd)
			}
			if err != nil {
				return err
			}
			if e.Route == policy.Block.String() {
				return &exitError{code: exitBlocked}
			}
			return nil
		},
	}
	f := explain.Flags()
	cf.add(f, false)
	f.StringArrayVar(&extra.Local, "local", nil, "add a local filter rule (repeatable)")
	f.StringArrayVar(&extra.Remote, "remote", nil, "add a remote filter rule (repeatable)")
	f.StringArrayVar(&extra.Block, "block", nil, "add a block rule (repeatable)")
	f.BoolVar(&noAgent, "no-agent", false, "explain a run with no agent or target (default routes go local)")
	out.add(f)
	cmd.AddCommand(explain)
	return cmd
}

// explanation is route explain's answer; -o json prints it as is.
type explanation struct {
	Dest  string `json:"dest"`
	Proto string `json:"proto"`
	Host  string `json:"host,omitempty"`
	// Address is the destination's IP and port, when DEST gives an IP.
	Address string `json:"address,omitempty"`
	// Resolve says which side resolves a hostname, and by which rule.
	Resolve *resolution `json:"resolve,omitempty"`
	Route   string      `json:"route"` // local, remote or block
	Rule    string      `json:"rule"`
	Note    string      `json:"note,omitempty"`
}

type resolution struct {
	Route string `json:"route"`
	Rule  string `json:"rule"`
	By    string `json:"by"`
}

func explainDest(p *policy.Policy, d dest) explanation {
	e := explanation{Dest: d.raw, Proto: d.proto.String(), Host: d.host}
	flow := policy.Flow{Proto: d.proto, Dst: netip.AddrPortFrom(d.addr, d.port), Host: d.host}
	if d.addr.IsValid() {
		e.Address = flow.Dst.String()
	}
	if d.host != "" {
		side := p.ResolveSide(d.host)
		by := "the cluster's DNS, through the agent"
		if side.Route == policy.Local {
			by = "the host's resolver (its /etc/hosts too)"
		}
		e.Resolve = &resolution{Route: side.Route.String(), Rule: side.Rule, By: by}
		if d.host == "localhost" {
			flow.Dst = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), d.port)
		}
	}
	dec := p.Decide(flow)
	e.Route, e.Rule = dec.Route.String(), dec.Rule
	if d.host != "" && !flow.Dst.Addr().IsValid() {
		e.Note = "the address is not known here, so only hostname, port and protocol rules applied"
	}
	if names := ruleHostnames(p); d.addr.IsValid() && len(names) > 0 {
		e.Note = fmt.Sprintf("in a run, the rules naming %s also match this address if a name resolves to it "+
			"(on the side its rule sends it to); route explain does not resolve names", strings.Join(names, ", "))
	}
	return e
}

// ruleHostnames are the host names the rules name, sorted.
func ruleHostnames(p *policy.Policy) []string {
	var out []string
	for n := range p.RuleNames() {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (e explanation) print(cmd *cobra.Command) {
	w := cmd.OutOrStdout()
	if e.Resolve != nil {
		fmt.Fprintf(w, "resolve: %s (%s) by %s\n", e.Resolve.Route, e.Resolve.Rule, e.Resolve.By)
	}
	fmt.Fprintf(w, "route:   %s\n", e.Route)
	fmt.Fprintf(w, "rule:    %s\n", e.Rule)
	if e.Note != "" {
		fmt.Fprintf(w, "note:    %s\n", e.Note)
	}
}

type dest struct {
	raw   string
	proto policy.Proto
	host  string
	addr  netip.Addr
	port  uint16
}

// parseDest reads DEST: [tcp|udp://]host-or-ip[:port]. TCP by default.
func parseDest(s string) (dest, error) {
	d := dest{raw: s, proto: policy.TCP}
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
