package kernelpath

import (
	"fmt"

	"github.com/google/nftables"
)

// forwardDropper names a firewall chain on the host's forward hook that
// drops by default and that the kernel path's rules cannot open: any but
// iptables' own FORWARD chain (table ip "filter"), where they go first.
// firewalld and hand-written nftables set-ups have such chains; the
// sandbox's flows would vanish in them, so the kernel path stays off.
// It returns "" when there is none.
func forwardDropper(c *nftables.Conn) (string, error) {
	chains, err := c.ListChains()
	if err != nil {
		return "", fmt.Errorf("list the host's nftables chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			continue
		}
		if ch.Table.Family == nftables.TableFamilyIPv4 && ch.Table.Name == "filter" && ch.Name == "FORWARD" {
			continue
		}
		if ch.Table.Family != nftables.TableFamilyIPv4 && ch.Table.Family != nftables.TableFamilyINet {
			continue // IPv6 or bridge: not the kernel path's
		}
		return fmt.Sprintf("table %s %s, chain %s", family(ch.Table.Family), ch.Table.Name, ch.Name), nil
	}
	return "", nil
}

func family(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprint(f)
}
