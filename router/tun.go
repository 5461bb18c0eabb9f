package router

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// NewTUNEndpoint wraps the host side of the sandbox's TUN device (opened
// with IFF_TUN|IFF_NO_PI, and IFF_VNET_HDR with offloads if it can) as the
// router's link. The router needs nothing more than this file descriptor:
// no privileges, no namespace. The caller keeps fd open until the router
// has stopped, and closes it.
func NewTUNEndpoint(fd int, mtu uint32) (stack.LinkEndpoint, error) {
	vnet, err := tunHasVnetHeader(fd)
	if err != nil {
		return nil, fmt.Errorf("router: TUN endpoint: %w", err)
	}
	if vnet {
		return newVnetLink(fd, mtu)
	}
	ep, err := fdbased.New(&fdbased.Options{
		FDs:            []int{fd},
		MTU:            mtu,
		EthernetHeader: false,
		// The kernel verifies checksums of what it receives from a TUN
		// only when told to; the sandbox's own stack checks ours.
		RXChecksumOffload: true,
	})
	if err != nil {
		return nil, fmt.Errorf("router: TUN endpoint: %w", err)
	}
	return ep, nil
}
