// Package vxlan is the forwarder's side of NSM's VXLAN mechanism: a point-to-point VXLAN device
// per connection between the forwarders of two nodes, which xconnect joins with the workload's
// vWire. VXLAN carries Ethernet frames, so it serves ETHERNET payload and IP payload alike (the
// vWire's ends resolve each other across it); it is the default remote mechanism for ETHERNET.
//
// The client (NewClient, in the client's forwarder) offers VXLAN with its underlay address
// (src_ip, NSM_TUNNEL_IP), its UDP port (src_port) and a VNI it proposes; the server (NewServer,
// in the endpoint's forwarder) accepts it, adds its own address (dst_ip) and port (dst_port), and
// keeps the VNI or picks another. Each side then makes its device, named by ifname (roles
// client-tunnel in the server, endpoint-tunnel in the client), with the VNI, its own address as the source and the other's as the remote: the server
// after next returned (the endpoint's vWire exists), the client once the server answered.
//
// VNIs: Linux tells the VXLAN devices of a namespace apart by VNI and port alone, whatever
// their addresses, so a VNI must be free among all the devices of each forwarder, not only
// between two nodes. The client proposes a random VNI free on its node (neither a device's nor
// reserved by a connection in flight; a VNIPool shared by the forwarder's server and client keeps
// the reservations); the server keeps it when it is free on its node too and otherwise picks a
// free one; the client then takes the server's VNI, and in the rare case that it is taken on the
// client's node by then, fails with Aborted (the caller retries: another VNI is proposed).
// Both sides must use the same UDP port (a Linux VXLAN device sends to the port it listens on):
// a mismatch is FailedPrecondition naming both ports.
//
// MTU: the tunnel's overlay MTU is the MTU of the interface that holds the tunnel address, less
// the 50 (IPv4) or 70 (IPv6) bytes of VXLAN's headers. The server lowers the connection's MTU to
// it before next, so the endpoint's vWire gets it; the client's vWire gets it from the answer.
//
// Adoption: a restarted forwarder adopts the device its previous run made for a connection the
// nsmgr's heal sends again. The client proposes the VNI of the device of the connection's name
// (which holds it), so that the server, which kept its own device, keeps it too; each side keeps
// a device that is what the connection asks for (kvxlan.Adopt: VNI, addresses, port, MTU), with
// no change to it, and makes anew one that is not.
//
// Guarantees: the offer and the answer are checked (InvalidArgument for a missing or malformed
// address, or one of the other family than the tunnel address); a first Request whose device
// cannot be made closes downstream and returns the error, with nothing left; a refresh keeps the
// device, or makes it anew when the remote address, VNI or MTU changed (replacing a device of the
// connection's name that nothing kept, left by an earlier try); on the client side, a
// next hop that chose another mechanism removes the device; Close removes it and always calls
// next. A forwarder without a tunnel address has no VXLAN: the forwarder chain leaves it out.
package vxlan

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/log"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/internal/mtu"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/xconnect"
	kvxlan "vwire.dev/sdk-kernel/pkg/kernel/vxlan"
)

// Option configures an element.
type Option func(*options)

type options struct {
	port uint16
	pool *VNIPool
}

// WithPort sets the UDP port of the forwarder's VXLAN devices (default 4789, vxlan.DefaultPort).
func WithPort(port uint16) Option { return func(o *options) { o.port = port } }

// WithVNIPool shares the VNI reservations of pool; give a forwarder's server and client the same.
// Without it, each element has a pool of its own.
func WithVNIPool(pool *VNIPool) Option { return func(o *options) { o.pool = pool } }

// VNIPool reserves VNIs in one forwarder's namespace from choosing one until its device is made
// (or the attempt failed): from then on the device itself holds it.
type VNIPool struct {
	mu       sync.Mutex
	reserved map[uint32]bool
}

// NewVNIPool returns an empty pool.
func NewVNIPool() *VNIPool { return &VNIPool{reserved: map[uint32]bool{}} }

// reserve reserves want if it is free in ns and in the pool; otherwise, if any is true, a random
// free VNI; otherwise it fails with Aborted.
func (p *VNIPool) reserve(ns netns.NsHandle, want uint32, any bool) (uint32, error) {
	used, err := devices(ns)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	free := func(v uint32) bool { return v > 0 && v < 1<<24 && !used[v] && !p.reserved[v] }
	if !free(want) {
		if !any {
			return 0, status.Errorf(codes.Aborted, "vxlan: VNI %d is taken on this node; retry, and another will be chosen", want)
		}
		want = 0
		for range 64 {
			if v := 1 + rand.Uint32N(1<<24-1); free(v) {
				want = v
				break
			}
		}
		if want == 0 {
			return 0, status.Error(codes.ResourceExhausted, "vxlan: found no free VNI in 64 tries")
		}
	}
	p.reserved[want] = true
	return want, nil
}

func (p *VNIPool) release(vni uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.reserved, vni)
}

// devices returns the VNIs of the VXLAN devices in ns.
func devices(ns netns.NsHandle) (map[uint32]bool, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, kerr.Wrap(err, "vxlan: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	for {
		links, err := h.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, kerr.Wrap(err, "vxlan: list interfaces")
		}
		used := map[uint32]bool{}
		for _, l := range links {
			if v, ok := l.(*netlink.Vxlan); ok {
				used[uint32(v.VxlanId)] = true
			}
		}
		return used, nil
	}
}

// tunnel is a connection's device as the element made it.
type tunnel struct {
	cfg kvxlan.Config
	end *xconnect.End
}

func (t *tunnel) End() *xconnect.End { return t.end }

var (
	serverKey = metadata.NewKey[*tunnel]("vxlan server tunnel")
	clientKey = metadata.NewKey[*tunnel]("vxlan client tunnel")
)

// base is what the server and the client share: the forwarder's namespace, address and port.
type base struct {
	fwd   netns.NsHandle
	local netip.Addr
	port  uint16
	pool  *VNIPool
}

func newBase(fwd netns.NsHandle, local netip.Addr, opts []Option) base {
	if !local.IsValid() {
		panic("vxlan: a tunnel address is required")
	}
	o := options{port: kvxlan.DefaultPort}
	for _, opt := range opts {
		opt(&o)
	}
	if o.pool == nil {
		o.pool = NewVNIPool()
	}
	return base{fwd: fwd, local: local.Unmap(), port: o.port, pool: o.pool}
}

// NewServer returns the element that accepts VXLAN from another node's forwarder, in the
// forwarder's namespace fwd (which stays the caller's) with underlay address local.
func NewServer(fwd netns.NsHandle, local netip.Addr, opts ...Option) networkservice.NetworkServiceServer {
	return &server{newBase(fwd, local, opts)}
}

type server struct{ base }

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	mech := vxlan.ToMechanism(req.GetConnection().GetMechanism())
	if mech == nil {
		return next.Server(ctx).Request(ctx, req)
	}
	remote, err := s.peer(mech, vxlan.SrcIP, vxlan.SrcPort, "client's")
	if err != nil {
		return nil, err
	}
	overlay, err := s.overlayMTU()
	if err != nil {
		return nil, err
	}
	m := metadata.Server(ctx)
	old, refresh := serverKey.Load(m)
	vni := mech.VNI()
	standing := old != nil && old.cfg.Remote == remote && old.cfg.VNI == vni
	// A device a previous run of the forwarder left for this connection holds its VNI.
	left := old == nil && vni != 0 && kvxlan.VNI(s.fwd, ifname.Name(req.GetConnection().GetId(), ifname.ClientTunnel)) == vni
	if !standing && !left {
		if vni, err = s.pool.reserve(s.fwd, vni, true); err != nil {
			return nil, err
		}
		defer s.pool.release(vni)
	}
	mech.SetVNI(vni)
	mech.SetDstIP(s.local.AsSlice())
	mech.GetParameters()[vxlan.DstPort] = strconv.Itoa(int(s.port))
	mtu.Lower(req.GetConnection(), overlay)

	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	want := kvxlan.Config{Name: ifname.Name(conn.GetId(), ifname.ClientTunnel), VNI: vni, Local: s.local, Remote: remote, Port: s.port, MTU: int(overlay)}
	now, err := s.ensure(ctx, old, want)
	return xconnect.KeepServer(ctx, conn, serverKey, refresh, now, err)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return xconnect.CloseServer(ctx, conn, serverKey, s.remove)
}

// NewClient returns the element that offers VXLAN towards another node and makes the client's
// side of the tunnel, in the forwarder's namespace fwd with underlay address local.
func NewClient(fwd netns.NsHandle, local netip.Addr, opts ...Option) networkservice.NetworkServiceClient {
	return &client{newBase(fwd, local, opts)}
}

type client struct{ base }

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	m := metadata.Client(ctx)
	old, refresh := clientKey.Load(m)
	var proposed uint32
	if old != nil {
		proposed = old.cfg.VNI // its device holds it
	} else if left := kvxlan.VNI(c.fwd, ifname.Name(req.GetConnection().GetId(), ifname.EndpointTunnel)); left != 0 {
		proposed = left // a previous run of the forwarder left the device, which holds it: propose it again to adopt it
	} else {
		var err error
		if proposed, err = c.pool.reserve(c.fwd, 0, true); err != nil {
			return nil, err
		}
		defer c.pool.release(proposed)
	}
	offer := vxlan.ToMechanism(&networkservice.Mechanism{Cls: cls.REMOTE, Type: vxlan.MECHANISM})
	offer.SetSrcIP(c.local.AsSlice())
	offer.SetVNI(proposed)
	offer.GetParameters()[vxlan.SrcPort] = strconv.Itoa(int(c.port))
	req.MechanismPreferences = append(req.MechanismPreferences, offer.Mechanism)

	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	mech := vxlan.ToMechanism(conn.GetMechanism())
	if mech == nil { // the next hop chose another mechanism
		return conn, xconnect.Forget(ctx, m, clientKey, xconnect.Out, c.remove)
	}
	now, err := c.answer(ctx, old, conn, mech, proposed)
	return xconnect.KeepClient(ctx, conn, clientKey, refresh, now, err, opts...)
}

// answer makes the client's side of the tunnel the server answered with, and returns what
// stands now (old, if the answer is refused).
func (c *client) answer(ctx context.Context, old *tunnel, conn *networkservice.Connection, mech *vxlan.Mechanism, proposed uint32) (*tunnel, error) {
	remote, err := c.peer(mech, vxlan.DstIP, vxlan.DstPort, "server's")
	if err != nil {
		return old, status.Errorf(codes.FailedPrecondition, "%s (endpoint %s)", status.Convert(err).Message(), conn.GetNetworkServiceEndpointName())
	}
	vni := mech.VNI()
	if vni == 0 {
		return old, status.Errorf(codes.FailedPrecondition, "vxlan: the server's answer (endpoint %s) has no VNI", conn.GetNetworkServiceEndpointName())
	}
	overlay, err := c.overlayMTU()
	if err != nil {
		return old, err
	}
	if vni != proposed && (old == nil || old.cfg.VNI != vni) { // the server picked another
		if _, err := c.pool.reserve(c.fwd, vni, false); err != nil {
			return old, err
		}
		defer c.pool.release(vni)
	}
	mtu.Lower(conn, overlay)
	want := kvxlan.Config{Name: ifname.Name(conn.GetId(), ifname.EndpointTunnel), VNI: vni, Local: c.local, Remote: remote, Port: c.port, MTU: int(overlay)}
	return c.ensure(ctx, old, want)
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return xconnect.CloseClient(ctx, conn, clientKey, c.remove, opts...)
}

// peer reads the other forwarder's address (under key addrKey) and checks its port (portKey).
func (b *base) peer(mech *vxlan.Mechanism, addrKey, portKey, whose string) (netip.Addr, error) {
	params := mech.GetParameters()
	addr, err := netip.ParseAddr(params[addrKey])
	if err != nil {
		return netip.Addr{}, status.Errorf(codes.InvalidArgument, "vxlan: the %s mechanism parameter %s %q is not an IP address", whose, addrKey, params[addrKey])
	}
	addr = addr.Unmap()
	if addr.Is4() != b.local.Is4() {
		return netip.Addr{}, status.Errorf(codes.InvalidArgument,
			"vxlan: the %s underlay address %s and this forwarder's %s are of different families; give every forwarder's NSM_TUNNEL_IP the same family", whose, addr, b.local)
	}
	if p := params[portKey]; p != "" && p != strconv.Itoa(int(b.port)) {
		return netip.Addr{}, status.Errorf(codes.FailedPrecondition,
			"vxlan: the %s VXLAN port is %s and this forwarder's %d; a Linux VXLAN device sends to the port it listens on, so give every forwarder the same NSM_VXLAN_PORT", whose, p, b.port)
	}
	return addr, nil
}

// overlayMTU is the overlay MTU of a tunnel from the forwarder's address.
func (b *base) overlayMTU() (uint32, error) {
	h, err := netlink.NewHandleAt(b.fwd, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, kerr.Wrap(err, "vxlan: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0, kerr.Wrap(err, "vxlan: list addresses")
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == b.local {
			link, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, kerr.Wrap(err, "vxlan: find the interface of %s", b.local)
			}
			overhead := 50
			if b.local.Is6() {
				overhead = 70
			}
			return uint32(link.Attrs().MTU - overhead), nil
		}
	}
	return 0, status.Errorf(codes.FailedPrecondition,
		"vxlan: the tunnel address %s is on no interface of the forwarder's namespace; set NSM_TUNNEL_IP to one of its addresses", b.local)
}

// ensure makes the device want, keeping old if it is the same, and returns what stands now.
func (b *base) ensure(ctx context.Context, old *tunnel, want kvxlan.Config) (*tunnel, error) {
	if old != nil && old.cfg == want {
		return old, nil
	}
	if old != nil {
		if err := b.remove(old); err != nil {
			return old, err
		}
	} else {
		// A restarted forwarder: the device its previous run made for this connection may stand.
		kept, err := kvxlan.Adopt(b.fwd, want)
		if err != nil {
			return nil, fmt.Errorf("vxlan: %w", err)
		}
		if kept {
			log.FromContext(ctx).Info("adopted the VXLAN device a previous run made", "interface", want.Name, "vni", want.VNI)
			return &tunnel{cfg: want, end: &xconnect.End{Name: want.Name}}, nil
		}
	}
	err := kvxlan.Create(b.fwd, want)
	if status.Code(err) == codes.AlreadyExists && kvxlan.Delete(b.fwd, want.Name) == nil {
		// The name is this connection's (ifname's rule) and nothing kept holds it: the device
		// is left from an earlier try of this connection.
		err = kvxlan.Create(b.fwd, want)
	}
	if err != nil {
		return nil, fmt.Errorf("vxlan: %w", err)
	}
	return &tunnel{cfg: want, end: &xconnect.End{Name: want.Name}}, nil
}

// remove deletes t's device, which frees its VNI.
func (b *base) remove(t *tunnel) error {
	if err := kvxlan.Delete(b.fwd, t.cfg.Name); err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	return nil
}
