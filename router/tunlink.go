package router

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// vnetLink is the router's link on a TUN opened with IFF_VNET_HDR and
// offloads (TUNSETOFFLOAD: checksum, TSO): every packet crossing the TUN
// carries a virtio_net_hdr. That lets both sides skip checksums over the
// data (the kernel marks what it sends "checksum partial", and so do we for
// TCP) and lets large TCP segments cross whole, so a small MTU costs no
// per-packet overhead. gVisor's fdbased endpoint does this only for packet
// sockets, hence this endpoint.
//
// Reads scatter each packet into a small and a large view, so a small
// packet (an ACK, a DNS query) holds no 64 KiB chunk while it waits in a
// receive queue.
type vnetLink struct {
	file *os.File // our own descriptor of the TUN, registered with Go's poller
	mtu  uint32

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// virtio_net_hdr (linux/virtio_net.h), as the TUN reads and writes it in
// the host's byte order (TUNSETVNETLE/BE unset; little-endian here).
const (
	vnetHdrSize       = 10
	vnetFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetGSONone       = 0
	vnetGSOTCPv4      = 1
	vnetGSOTCPv6      = 4
	maxTUNPacket      = 1 << 16
	smallReadView     = 2048
	vnetGSOMaxSize    = 1<<16 - 1
)

// tunHasVnetHeader reports whether the TUN behind fd was opened with
// IFF_VNET_HDR.
func tunHasVnetHeader(fd int) (bool, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return false, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return false, fmt.Errorf("TUNGETIFF: %w", err)
	}
	return ifr.Uint16()&unix.IFF_VNET_HDR != 0, nil
}

func newVnetLink(fd int, mtu uint32) (*vnetLink, error) {
	// Our own descriptor: the caller keeps and closes fd; closing ours
	// wakes the reader.
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate the TUN descriptor: %w", err)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("TUN descriptor non-blocking: %w", err)
	}
	return &vnetLink{file: os.NewFile(uintptr(dup), "tun"), mtu: mtu}, nil
}

func (l *vnetLink) MTU() uint32                             { return l.mtu }
func (l *vnetLink) SetMTU(mtu uint32)                       { l.mtu = mtu }
func (l *vnetLink) MaxHeaderLength() uint16                 { return 0 }
func (l *vnetLink) LinkAddress() tcpip.LinkAddress          { return "" }
func (l *vnetLink) SetLinkAddress(tcpip.LinkAddress)        {}
func (l *vnetLink) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (l *vnetLink) AddHeader(*stack.PacketBuffer)           {}
func (l *vnetLink) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *vnetLink) GSOMaxSize() uint32                      { return vnetGSOMaxSize }
func (l *vnetLink) SupportedGSO() stack.SupportedGSO        { return stack.HostGSOSupported }

// Capabilities: what the kernel hands us is either checksummed or marked
// partial (it never crossed a wire), so the netstack need not verify it.
func (l *vnetLink) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// SetOnCloseAction is for links that can end by themselves; this one ends
// only when the stack removes it (as fdbased's).
func (l *vnetLink) SetOnCloseAction(func()) {}

// Attach starts the reader; Attach(nil) stops it.
func (l *vnetLink) Attach(d stack.NetworkDispatcher) {
	l.mu.Lock()
	old := l.dispatcher
	l.dispatcher = d
	l.mu.Unlock()
	if d == nil {
		l.Close()
		l.wg.Wait()
		return
	}
	if old == nil {
		l.wg.Add(1)
		go l.readLoop()
	}
}

func (l *vnetLink) IsAttached() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.dispatcher != nil
}

func (l *vnetLink) Wait() { l.wg.Wait() }

// Close closes our descriptor, which ends the reader.
func (l *vnetLink) Close() {
	l.closeOnce.Do(func() { l.file.Close() })
}

func (l *vnetLink) readLoop() {
	defer l.wg.Done()
	rc, err := l.file.SyscallConn()
	if err != nil {
		return
	}
	var hdr [vnetHdrSize]byte
	small := buffer.NewViewSize(smallReadView)
	large := buffer.NewViewSize(maxTUNPacket)
	defer func() { small.Release(); large.Release() }()
	iov := make([][]byte, 3)
	for {
		iov[0], iov[1], iov[2] = hdr[:], small.AsSlice(), large.AsSlice()
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, rerr = unix.Readv(int(fd), iov)
				if rerr == unix.EINTR {
					continue
				}
				return rerr != unix.EAGAIN
			}
		})
		if err != nil {
			return // closed
		}
		if rerr != nil {
			if errors.Is(rerr, unix.EBADF) {
				return
			}
			continue // e.g. EIO while the link goes down; the next read tells
		}
		n -= vnetHdrSize
		if n <= 0 {
			continue
		}
		var payload buffer.Buffer
		if n <= smallReadView {
			small.CapLength(n)
			payload = buffer.MakeWithView(small)
			small = buffer.NewViewSize(smallReadView)
		} else {
			large.CapLength(n - smallReadView)
			payload = buffer.MakeWithView(small)
			payload.Append(large)
			small = buffer.NewViewSize(smallReadView)
			large = buffer.NewViewSize(maxTUNPacket)
		}
		l.deliver(payload)
	}
}

func (l *vnetLink) deliver(payload buffer.Buffer) {
	var proto tcpip.NetworkProtocolNumber
	first, ok := payload.PullUp(0, 1)
	if !ok {
		payload.Release()
		return
	}
	switch header.IPVersion(first.AsSlice()) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		payload.Release()
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
	defer pkt.DecRef()
	l.mu.RLock()
	d := l.dispatcher
	l.mu.RUnlock()
	if d != nil {
		d.DeliverNetworkPacket(proto, pkt)
	}
}

// WritePackets writes each packet with its virtio_net_hdr: checksum
// partial and, for a TCP segment larger than its MSS, the segmentation the
// kernel is to apply.
func (l *vnetLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	rc, err := l.file.SyscallConn()
	if err != nil {
		return 0, &tcpip.ErrClosedForSend{}
	}
	written := 0
	var hdr [vnetHdrSize]byte
	iov := make([][]byte, 0, 8)
	for _, pkt := range pkts.AsSlice() {
		hdr = [vnetHdrSize]byte{}
		if gso := pkt.GSOOptions; gso.Type != stack.GSONone {
			binary.LittleEndian.PutUint16(hdr[2:], uint16(pkt.HeaderSize()))
			if gso.NeedsCsum {
				hdr[0] = vnetFlagNeedsCsum
				binary.LittleEndian.PutUint16(hdr[6:], gso.L3HdrLen)
				binary.LittleEndian.PutUint16(hdr[8:], gso.CsumOffset)
			}
			if uint16(pkt.Data().Size()) > gso.MSS {
				switch gso.Type {
				case stack.GSOTCPv4:
					hdr[1] = vnetGSOTCPv4
				case stack.GSOTCPv6:
					hdr[1] = vnetGSOTCPv6
				}
				binary.LittleEndian.PutUint16(hdr[4:], gso.MSS)
			}
		}
		iov = append(iov[:0], hdr[:])
		iov = append(iov, pkt.AsSlices()...)
		var werr error
		err := rc.Write(func(fd uintptr) bool {
			for {
				_, werr = unix.Writev(int(fd), iov)
				if werr == unix.EINTR {
					continue
				}
				return werr != unix.EAGAIN
			}
		})
		if err != nil {
			return written, &tcpip.ErrClosedForSend{}
		}
		if werr != nil {
			// A packet the kernel refuses (e.g. the link is down) is
			// lost, as on a wire; TCP retransmits.
			if errors.Is(werr, unix.EBADF) {
				return written, &tcpip.ErrClosedForSend{}
			}
		}
		written++
	}
	return written, nil
}
