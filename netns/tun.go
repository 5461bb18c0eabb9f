package netns

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// tunOffloads are what an offloading TUN asks of the kernel: packets it
// hands us may carry a partial checksum (TUN_F_CSUM) and be TCP segments
// larger than the MTU (TSO); we may hand it the same.
const tunOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// openTUN creates the TUN link name in the calling thread's network
// namespace and returns its file. The link is not persistent: it disappears
// when the last copy of the file is closed. The fd is close-on-exec (the app
// must never inherit it) and non-blocking, so os.NewFile registers it with
// Go's poller. With offload, every packet read or written starts with a
// virtio_net_hdr (IFF_VNET_HDR) and the kernel skips checksums and
// segmentation for the TUN.
func openTUN(name string, offload bool) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("open /dev/net/tun: %w (load the tun module: modprobe tun)", err)
		}
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN name %q: %w", name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if offload {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create TUN %q (TUNSETIFF): %w", name, err)
	}
	if offload {
		// A kernel without these offloads still speaks virtio_net_hdr,
		// with nothing to offload: it is only slower.
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunOffloads); err != nil {
			unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM)
		}
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}
