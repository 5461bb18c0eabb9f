package sandbox

import (
	"errors"
	"fmt"

	"github.com/trafficpolice/trafficpolice/config"
	"github.com/trafficpolice/trafficpolice/router/policy"
)

// ExtraRules are filter rules given on the command line, added on top of
// the configuration file's.
type ExtraRules struct {
	Local, Remote, Block []string
}

// Policy builds the outgoing policy from the configuration and the
// command line's rules. haveRemote says whether an agent or target is
// configured. Errors name where the bad entry came from: the file's field
// path or the flag.
func Policy(cfg *config.Config, extra ExtraRules, haveRemote bool) (*policy.Policy, error) {
	out := cfg.Feature.Network.Outgoing
	dns := cfg.Feature.Network.DNS
	rules := policy.Rules{
		Local:           merge(out.Filter.Local, extra.Local),
		Remote:          merge(out.Filter.Remote, extra.Remote),
		Block:           merge(out.Filter.Block, extra.Block),
		TCP:             out.TCP,
		UDP:             out.UDP,
		IgnoreLocalhost: out.IgnoreLocalhost,
		DNSEnabled:      dns.Enabled,
		DNSLocal:        dns.Filter.Local,
		DNSRemote:       dns.Filter.Remote,
		HaveRemote:      haveRemote,
	}
	p, err := policy.New(rules)
	if err == nil {
		return p, nil
	}
	var ee *policy.EntryError
	if !errors.As(err, &ee) {
		if rules.Local != nil && rules.Remote != nil && (extra.Local != nil || extra.Remote != nil) {
			return nil, fmt.Errorf("%w (the command line's --local/--remote add to the file's filter)", err)
		}
		return nil, err
	}
	var fileList, flagList []string
	var path, flag string
	switch ee.List {
	case "local":
		fileList, flagList, path, flag = out.Filter.Local, extra.Local, "feature.network.outgoing.filter.local", "--local"
	case "remote":
		fileList, flagList, path, flag = out.Filter.Remote, extra.Remote, "feature.network.outgoing.filter.remote", "--remote"
	case "block":
		fileList, flagList, path, flag = out.Filter.Block, extra.Block, "feature.network.outgoing.filter.block", "--block"
	case "dns.local":
		return nil, fmt.Errorf("feature.network.dns.filter.local[%d] %q: %w", ee.Index, ee.Entry, ee.Err)
	case "dns.remote":
		return nil, fmt.Errorf("feature.network.dns.filter.remote[%d] %q: %w", ee.Index, ee.Entry, ee.Err)
	}
	_ = flagList
	if ee.Index < len(fileList) {
		return nil, fmt.Errorf("%s[%d] %q: %w", path, ee.Index, ee.Entry, ee.Err)
	}
	return nil, fmt.Errorf("%s %q: %w", flag, ee.Entry, ee.Err)
}

func merge(file, flags []string) []string {
	if file == nil && flags == nil {
		return nil
	}
	out := append([]string{}, file...)
	return append(out, flags...)
}

// HaveRemote says whether the configuration points at an agent or a target.
func HaveRemote(cfg *config.Config, agentAddress string) bool {
	return agentAddress != "" || cfg.Agent.Address != "" || cfg.Target.Path != ""
}
