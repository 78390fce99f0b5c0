package udpproxy

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// socket is the public UDP socket. Bound to one address, replies leave
// from it. Bound to every address (0.0.0.0 or ::) on a host with several
// (an anycast edge), the kernel would pick a reply's source by its
// routes, and a client would get the reply from an address it never
// sent to and drop it: then each datagram's destination is read (IP_PKTINFO)
// and its flow's replies are sent from that address.
type socket struct {
	pc  *net.UDPConn
	pc4 *ipv4.PacketConn // wildcard IPv4
	pc6 *ipv6.PacketConn // wildcard IPv6
}

func newSocket(pc *net.UDPConn) *socket {
	s := &socket{pc: pc}
	local := pc.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	if !local.IsUnspecified() {
		return s
	}
	if local.Is4() {
		p := ipv4.NewPacketConn(pc)
		if p.SetControlMessage(ipv4.FlagDst, true) == nil {
			s.pc4 = p
		}
		return s
	}
	p := ipv6.NewPacketConn(pc)
	if p.SetControlMessage(ipv6.FlagDst, true) == nil {
		s.pc6 = p
	}
	return s
}

// read reads a datagram: its client, and the address it was sent to
// (invalid when the socket has only one).
func (s *socket) read(b []byte) (n int, client netip.AddrPort, local netip.Addr, err error) {
	var src net.Addr
	switch {
	case s.pc4 != nil:
		var cm *ipv4.ControlMessage
		n, cm, src, err = s.pc4.ReadFrom(b)
		if cm != nil {
			local, _ = netip.AddrFromSlice(cm.Dst)
		}
	case s.pc6 != nil:
		var cm *ipv6.ControlMessage
		n, cm, src, err = s.pc6.ReadFrom(b)
		if cm != nil {
			local, _ = netip.AddrFromSlice(cm.Dst)
		}
	default:
		n, client, err = s.pc.ReadFromUDPAddrPort(b)
		return n, netip.AddrPortFrom(client.Addr().Unmap(), client.Port()), netip.Addr{}, err
	}
	if err != nil {
		return n, client, local, err
	}
	if ua, ok := src.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		client = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return n, client, local.Unmap(), nil
}

// write sends b to client from local (if valid and the socket has many).
func (s *socket) write(b []byte, client netip.AddrPort, local netip.Addr) error {
	switch {
	case s.pc4 != nil && local.IsValid():
		_, err := s.pc4.WriteTo(b, &ipv4.ControlMessage{Src: local.AsSlice()}, net.UDPAddrFromAddrPort(client))
		return err
	case s.pc6 != nil && local.IsValid():
		_, err := s.pc6.WriteTo(b, &ipv6.ControlMessage{Src: local.AsSlice()}, net.UDPAddrFromAddrPort(client))
		return err
	}
	_, err := s.pc.WriteToUDPAddrPort(b, client)
	return err
}
