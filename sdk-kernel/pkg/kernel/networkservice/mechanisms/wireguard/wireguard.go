// Package wireguard is the forwarder's side of NSM's WIREGUARD mechanism: a WireGuard interface
// per connection between the forwarders of two nodes (wireguard-go on a TUN device where the
// kernel has no WireGuard), which xconnect routes to and from the workload's vWire. WireGuard
// carries IP packets, so it serves IP payload only; it is the default remote mechanism for IP.
//
// Keys: a forwarder has one key pair (generated at its start, given to both elements); its
// public key travels as src_public_key (the client's forwarder) and dst_public_key (the
// endpoint's forwarder). Each connection has an interface of its own in each forwarder, named by
// ifname (roles client-tunnel and endpoint-tunnel: unique across namespaces, which wireguard-go's UAPI sockets need), with
// its own UDP port (chosen by the kernel when the interface is made) and exactly one peer, the
// other forwarder, whose allowed IPs are everything (0.0.0.0/0, ::/0): what enters the
// interface goes to that peer, whatever addresses the connection routes.
//
// The exchange: the client (NewClient) offers WIREGUARD with its underlay address (src_ip) and
// public key; the server (NewServer) accepts it after next returned (the endpoint's vWire
// exists), makes its interface with the client's key as its peer, and answers with its address,
// port and key (dst_ip, dst_port, dst_public_key). The client then makes its interface with the
// server as its peer's endpoint, a persistent keepalive (25 s), and puts its own port in src_port.
// The keepalive starts the handshake at once, so the server learns the client's endpoint from it
// before the client's vWire exists: the server's peer needs no endpoint of its own.
//
// MTU: the interface's (1420 unless WithMTU: 1500 less WireGuard's 80 bytes over IPv6); the
// server lowers the connection's MTU to it before next, so both vWires get it.
//
// Guarantees: the offer and the answer are checked (InvalidArgument, or FailedPrecondition for a
// bad answer, naming the field; ETHERNET payload is InvalidArgument); a first Request whose
// interface cannot be made closes downstream and returns the error, with nothing left; a refresh
// keeps the interface, or makes it anew when the peer's key or address changed (replacing an
// interface of the connection's name that nothing kept, left by an earlier try); on the client
// side, a next hop that chose another mechanism removes it; Close removes it and always calls
// next. A forwarder without a tunnel address has no WireGuard: the forwarder chain leaves it out.
package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/wireguard"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/internal/mtu"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/xconnect"
	kwireguard "vwire.dev/sdk-kernel/pkg/kernel/wireguard"
)

// Keepalive is the client's persistent keepalive: it starts the handshake at once and keeps
// NAT mappings on the way open.
const Keepalive = 25 * time.Second

// Option configures an element.
type Option func(*options)

type options struct {
	mtu  int
	opts []kwireguard.Option
}

// WithMTU sets the MTU of the connections' interfaces (default wireguard.DefaultMTU).
func WithMTU(mtu int) Option { return func(o *options) { o.mtu = mtu } }

// WithDeviceOptions passes options to wireguard.New (WithUserspace, WithLogger).
func WithDeviceOptions(opts ...kwireguard.Option) Option {
	return func(o *options) { o.opts = append(o.opts, opts...) }
}

// tunnel is a connection's interface as the element made it.
type tunnel struct {
	dev    *kwireguard.Device
	peer   wgtypes.Key    // the other forwarder's public key
	remote netip.AddrPort // the other forwarder's address; port 0 on the server (learnt)
	port   int            // this interface's UDP port
	end    *xconnect.End
}

func (t *tunnel) End() *xconnect.End { return t.end }

var (
	serverKey = metadata.NewKey[*tunnel]("wireguard server tunnel")
	clientKey = metadata.NewKey[*tunnel]("wireguard client tunnel")
)

// base is what the server and the client share.
type base struct {
	fwd   netns.NsHandle
	local netip.Addr
	key   wgtypes.Key
	mtu   int
	opts  []kwireguard.Option
	role  string // ifname role of the connection's interface
}

func newBase(fwd netns.NsHandle, local netip.Addr, key wgtypes.Key, role string, opts []Option) base {
	if !local.IsValid() {
		panic("wireguard: a tunnel address is required")
	}
	if key == (wgtypes.Key{}) {
		panic("wireguard: a private key is required (wgtypes.GeneratePrivateKey)")
	}
	o := options{mtu: kwireguard.DefaultMTU}
	for _, opt := range opts {
		opt(&o)
	}
	return base{fwd: fwd, local: local.Unmap(), key: key, mtu: o.mtu, opts: o.opts, role: role}
}

// NewServer returns the element that accepts WIREGUARD from another node's forwarder, in the
// forwarder's namespace fwd (which stays the caller's), with underlay address local and the
// forwarder's private key.
func NewServer(fwd netns.NsHandle, local netip.Addr, key wgtypes.Key, opts ...Option) networkservice.NetworkServiceServer {
	return &server{newBase(fwd, local, key, ifname.ClientTunnel, opts)}
}

type server struct{ base }

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	mech := wireguard.ToMechanism(req.GetConnection().GetMechanism())
	if mech == nil {
		return next.Server(ctx).Request(ctx, req)
	}
	if p := req.GetConnection().GetPayload(); p == payload.Ethernet {
		return nil, status.Errorf(codes.InvalidArgument,
			"wireguard: WIREGUARD carries IP packets, and the connection's payload is %s; a service of %s payload needs VXLAN", p, p)
	}
	remote, err := s.addr(mech, wireguard.SrcIP, "client's")
	if err != nil {
		return nil, err
	}
	peer, err := s.publicKey(mech, wireguard.SrcPublicKey, "client's")
	if err != nil {
		return nil, err
	}
	port := mech.SrcPort() // 0 on a first Request; the handshake tells it
	mtu.Lower(req.GetConnection(), uint32(s.mtu))
	m := metadata.Server(ctx)
	old, refresh := serverKey.Load(m)

	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	want := &tunnel{peer: peer, remote: netip.AddrPortFrom(remote, 0)}
	now, err := s.ensure(old, want, conn.GetId(), port, 0)
	if _, err := xconnect.KeepServer(ctx, conn, serverKey, refresh, now, err); err != nil {
		return nil, err
	}
	answer := wireguard.ToMechanism(conn.GetMechanism())
	answer.SetDstIP(s.local.AsSlice())
	answer.SetDstPort(uint16(now.port))
	answer.SetDstPublicKey(s.key.PublicKey().String())
	return conn, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return xconnect.CloseServer(ctx, conn, serverKey, s.remove)
}

// NewClient returns the element that offers WIREGUARD towards another node for IP payload and
// makes the client's side of the tunnel, in the forwarder's namespace fwd, with underlay address
// local and the forwarder's private key.
func NewClient(fwd netns.NsHandle, local netip.Addr, key wgtypes.Key, opts ...Option) networkservice.NetworkServiceClient {
	return &client{newBase(fwd, local, key, ifname.EndpointTunnel, opts)}
}

type client struct{ base }

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	if req.GetConnection().GetPayload() != payload.Ethernet {
		offer := wireguard.ToMechanism(&networkservice.Mechanism{Cls: cls.REMOTE, Type: wireguard.MECHANISM})
		offer.SetSrcIP(c.local.AsSlice())
		offer.SetSrcPublicKey(c.key.PublicKey().String())
		req.MechanismPreferences = append(req.MechanismPreferences, offer.Mechanism)
	}
	m := metadata.Client(ctx)
	old, refresh := clientKey.Load(m)
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	mech := wireguard.ToMechanism(conn.GetMechanism())
	if mech == nil { // the next hop chose another mechanism
		return conn, xconnect.Forget(ctx, m, clientKey, xconnect.Out, c.remove)
	}
	now, err := c.answer(old, conn, mech)
	if _, err := xconnect.KeepClient(ctx, conn, clientKey, refresh, now, err, opts...); err != nil {
		return nil, err
	}
	mech.SetSrcPort(uint16(now.port))
	mtu.Lower(conn, uint32(c.mtu))
	return conn, nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return xconnect.CloseClient(ctx, conn, clientKey, c.remove, opts...)
}

// answer makes the client's side of the tunnel the server answered with.
func (c *client) answer(old *tunnel, conn *networkservice.Connection, mech *wireguard.Mechanism) (*tunnel, error) {
	nse := conn.GetNetworkServiceEndpointName()
	bad := func(err error) error {
		return status.Errorf(codes.FailedPrecondition, "%s (endpoint %s)", status.Convert(err).Message(), nse)
	}
	remote, err := c.addr(mech, wireguard.DstIP, "server's")
	if err != nil {
		return old, bad(err)
	}
	peer, err := c.publicKey(mech, wireguard.DstPublicKey, "server's")
	if err != nil {
		return old, bad(err)
	}
	port := mech.DstPort()
	if port == 0 {
		return old, status.Errorf(codes.FailedPrecondition, "wireguard: the server's answer (endpoint %s) has no %s", nse, wireguard.DstPort)
	}
	want := &tunnel{peer: peer, remote: netip.AddrPortFrom(remote, port)}
	return c.ensure(old, want, conn.GetId(), port, Keepalive)
}

// addr reads the other forwarder's underlay address under key.
func (b *base) addr(mech *wireguard.Mechanism, key, whose string) (netip.Addr, error) {
	value := mech.GetParameters()[key]
	addr, err := netip.ParseAddr(value)
	if err != nil {
		return netip.Addr{}, status.Errorf(codes.InvalidArgument, "wireguard: the %s mechanism parameter %s %q is not an IP address", whose, key, value)
	}
	addr = addr.Unmap()
	if addr.Is4() != b.local.Is4() {
		return netip.Addr{}, status.Errorf(codes.InvalidArgument,
			"wireguard: the %s underlay address %s and this forwarder's %s are of different families; give every forwarder's NSM_TUNNEL_IP the same family", whose, addr, b.local)
	}
	return addr, nil
}

// publicKey reads the other forwarder's public key under key.
func (b *base) publicKey(mech *wireguard.Mechanism, key, whose string) (wgtypes.Key, error) {
	value := mech.GetParameters()[key]
	k, err := wgtypes.ParseKey(value)
	if err != nil {
		return wgtypes.Key{}, status.Errorf(codes.InvalidArgument, "wireguard: the %s mechanism parameter %s %q is not a WireGuard key: %v", whose, key, value, err)
	}
	return k, nil
}

// ensure makes want's interface for connection id, keeping old if it has the same peer, and
// returns what stands now. port is the peer's port (0: unknown, learnt from the handshake).
func (b *base) ensure(old, want *tunnel, id string, port uint16, keepalive time.Duration) (*tunnel, error) {
	if old != nil && old.peer == want.peer && old.remote.Addr() == want.remote.Addr() &&
		(want.remote.Port() == 0 || old.remote.Port() == want.remote.Port()) {
		return old, nil
	}
	if old != nil {
		if err := b.remove(old); err != nil {
			return old, err
		}
	}
	name := ifname.Name(id, b.role)
	opts := append([]kwireguard.Option{kwireguard.WithMTU(b.mtu)}, b.opts...)
	dev, err := kwireguard.New(b.fwd, name, opts...)
	if status.Code(err) == codes.AlreadyExists {
		// The name is this connection's (ifname's rule) and nothing kept holds it: whatever
		// does is left from an earlier try of this connection. Free it and make the interface.
		if rerr := kwireguard.Remove(b.fwd, name); rerr == nil {
			dev, err = kwireguard.New(b.fwd, name, opts...)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	peer := wgtypes.PeerConfig{
		PublicKey:         want.peer,
		ReplaceAllowedIPs: true,
		AllowedIPs: []net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
		},
	}
	if port != 0 {
		peer.Endpoint = &net.UDPAddr{IP: want.remote.Addr().AsSlice(), Port: int(port)}
	}
	if keepalive > 0 {
		peer.PersistentKeepaliveInterval = &keepalive
	}
	err = dev.Configure(wgtypes.Config{PrivateKey: &b.key, ReplacePeers: true, Peers: []wgtypes.PeerConfig{peer}})
	var state *wgtypes.Device
	if err == nil {
		state, err = dev.State()
	}
	if err != nil {
		if cerr := dev.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", cerr))
		}
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	want.dev, want.port = dev, state.ListenPort
	want.end = &xconnect.End{Name: name, L3: true}
	return want, nil
}

// remove closes t's interface.
func (b *base) remove(t *tunnel) error {
	if err := t.dev.Close(); err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	return nil
}
