package router

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The vnet link speaks virtio_net_hdr on its descriptor. A datagram
// socketpair keeps packet boundaries as a TUN does, so the framing is
// tested here without root; the real TUN is covered by the sandbox's tests.

func vnetPair(t *testing.T) (*vnetLink, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	l, err := newVnetLink(fds[0], 65520)
	unix.Close(fds[0]) // the link has its own descriptor
	if err != nil {
		t.Fatalf("newVnetLink: %v", err)
	}
	t.Cleanup(l.Close)
	return l, fds[1]
}

func readPeer(t *testing.T, fd int) []byte {
	t.Helper()
	buf := make([]byte, 1<<17)
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatalf("read what the link wrote: %v", err)
	}
	return buf[:n]
}

// tcpPacket is a packet with a 20-byte IPv4 and a 20-byte TCP header
// (contents beside the point here) and size bytes of payload.
func tcpPacket(size int, gso stack.GSO) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: 40,
		Payload:            buffer.MakeWithData(bytes.Repeat([]byte{'d'}, size)),
	})
	copy(pkt.TransportHeader().Push(header.TCPMinimumSize), bytes.Repeat([]byte{'t'}, header.TCPMinimumSize))
	ip := pkt.NetworkHeader().Push(header.IPv4MinimumSize)
	copy(ip, bytes.Repeat([]byte{'i'}, header.IPv4MinimumSize))
	ip[0] = 0x45
	pkt.GSOOptions = gso
	return pkt
}

func TestVnetLinkWritesChecksumPartialAndSegmentation(t *testing.T) {
	l, peer := vnetPair(t)
	gso := stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: 1460, L3HdrLen: 20}
	for _, tc := range []struct {
		name string
		size int
		gso  stack.GSO
		want [vnetHdrSize]byte
	}{
		{name: "plain", size: 100, want: [vnetHdrSize]byte{}},
		{name: "partial checksum", size: 1000, gso: gso,
			want: [vnetHdrSize]byte{vnetFlagNeedsCsum, vnetGSONone, 40, 0, 0, 0, 20, 0, 16, 0}},
		{name: "segmented", size: 3000, gso: gso,
			want: [vnetHdrSize]byte{vnetFlagNeedsCsum, vnetGSOTCPv4, 40, 0, 0xb4, 0x05, 20, 0, 16, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pkts stack.PacketBufferList
			pkt := tcpPacket(tc.size, tc.gso)
			defer pkt.DecRef()
			pkts.PushBack(pkt)
			if n, err := l.WritePackets(pkts); n != 1 || err != nil {
				t.Fatalf("WritePackets = %d, %v; want 1, nil", n, err)
			}
			got := readPeer(t, peer)
			if len(got) != vnetHdrSize+40+tc.size {
				t.Fatalf("wrote %d bytes, want header + packet = %d", len(got), vnetHdrSize+40+tc.size)
			}
			if !bytes.Equal(got[:vnetHdrSize], tc.want[:]) {
				t.Errorf("virtio_net_hdr = %v, want %v", got[:vnetHdrSize], tc.want)
			}
			if got[vnetHdrSize] != 0x45 || got[len(got)-1] != 'd' {
				t.Errorf("the packet after the header is not the IP packet written")
			}
		})
	}
}

type recordingDispatcher struct {
	got chan *stack.PacketBuffer
}

func (d *recordingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.got <- pkt.IncRef()
}

func (d *recordingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func TestVnetLinkReadsPacketsOfEverySizeWithoutTheHeader(t *testing.T) {
	l, peer := vnetPair(t)
	d := &recordingDispatcher{got: make(chan *stack.PacketBuffer, 4)}
	l.Attach(d)
	defer l.Attach(nil)
	// A small packet fits the small view; a large one (a TSO segment the
	// kernel did not cut) spans both.
	for _, size := range []int{40, smallReadView, smallReadView + 1, 65000} {
		pkt := bytes.Repeat([]byte{'p'}, size)
		pkt[0] = 0x45 // IPv4
		binary.BigEndian.PutUint16(pkt[2:], uint16(size))
		hdr := [vnetHdrSize]byte{vnetFlagNeedsCsum, vnetGSOTCPv4}
		if _, err := unix.Write(peer, append(hdr[:], pkt...)); err != nil {
			t.Fatalf("write a %d-byte packet: %v", size, err)
		}
		select {
		case p := <-d.got:
			data := p.ToView().AsSlice()
			if !bytes.Equal(data, pkt) {
				t.Errorf("%d-byte packet: delivered %d bytes that differ from what was written", size, len(data))
			}
			p.DecRef()
		case <-time.After(2 * time.Second):
			t.Fatalf("%d-byte packet: not delivered", size)
		}
	}
}
