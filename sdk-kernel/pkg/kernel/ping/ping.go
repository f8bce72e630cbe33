// Package ping checks that an address answers ICMP echo from inside a network namespace, as
// `ping -c 1 -W 1` with two retries would, without running ping: a raw ICMP socket opened in the
// namespace (nsfile.Do), for IPv4 and IPv6. Tests use it to see traffic cross a vWire; a heal
// liveness check can use it to see a data path work.
package ping

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

// Ping sends up to three ICMP echo requests, one a second, from a raw socket in ns to dst and
// returns nil at the first matching reply: `ping -c 1 -W 1` with two retries.
func Ping(ns netns.NsHandle, dst netip.Addr) error {
	network, listen, proto := "ip4:icmp", "0.0.0.0", 1
	var request, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, listen, proto = "ip6:ipv6-icmp", "::", 58
		request, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var conn *icmp.PacketConn
	err := nsfile.Do(ns, func() (err error) {
		conn, err = icmp.ListenPacket(network, listen)
		return err
	})
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	var idBytes [2]byte
	_, _ = rand.Read(idBytes[:])
	id := int(idBytes[0])<<8 | int(idBytes[1])
	buf := make([]byte, 1500)
	for seq := 1; seq <= 3; seq++ {
		msg, err := (&icmp.Message{Type: request, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("vwire")}}).Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := conn.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("ping %s: %w", dst, err)
		}
		if err := conn.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			return err
		}
		for {
			n, from, err := conn.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return fmt.Errorf("ping %s: %w", dst, err)
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != reply {
				continue
			}
			echo, ok := m.Body.(*icmp.Echo)
			fromAddr, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
			if ok && echo.ID == id && echo.Seq == seq && fromAddr.Unmap() == dst {
				return nil
			}
		}
	}
	return fmt.Errorf("ping %s: no echo reply to 3 requests, 1 s each", dst)
}
