// Package kernel is the forwarder's side of NSM's KERNEL mechanism: it makes the vWire of a
// workload on the forwarder's node, a veth pair with one end in the workload's network namespace
// and the other in the forwarder's, for xconnect to join with the connection's other end.
//
// The server (NewServer) faces the client (NSC): its KERNEL mechanism names the client's
// namespace (inodeURL, a file:// URL) and interface (name); the client's end gets the client's
// share of the IP context (src_ip_addrs, src_routes, policies) and, for ETHERNET payload,
// ethernet_context.src_mac. The client (NewClient) faces a local endpoint (NSE): it offers a
// KERNEL mechanism whose interface name it derives from the connection (DefaultName); the
// endpoint accepts it stating its own namespace and, if it likes, another name; the endpoint's
// end gets the endpoint's share (dst_ip_addrs, dst_routes, dst_mac). The forwarder's ends are
// named by ifname (roles client and endpoint), so one connection's two vWires in one forwarder
// do not meet, and a restarted forwarder finds them.
//
// Both act after next returned, once the path to the endpoint is built and the connection
// carries its IP context and MTU, and put the forwarder's end into xconnect.Ends (In for the
// server, Out for the client).
//
// Guarantees:
//   - the server checks the client's mechanism before next (InvalidArgument for a netns URL
//     that is not a file:// URL or an interface name Linux refuses; Unimplemented for inode://);
//     the client checks the endpoint's answer after next (FailedPrecondition, naming the
//     endpoint);
//   - a first Request whose vWire cannot be made closes downstream (the caller's values, a fresh
//     deadline) and returns the error, with nothing left in either namespace;
//   - a refresh keeps the vWire. If the IP context changed, the workload's addresses, routes and
//     neighbours are replaced (the old share removed, the new applied); if the namespace,
//     interface name, MTU, payload or MAC changed, the vWire is made anew. A refresh that fails
//     returns the error and keeps the connection: what still stands is kept, and a later Close
//     removes it;
//   - on the client side, a refresh whose next hop chose another mechanism (heal found an
//     endpoint on another node) removes the vWire;
//   - Close removes the vWire (when the workload's namespace is gone, its end went with it and
//     only the forwarder's end is removed) and always calls next.
package kernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/xconnect"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk-kernel/pkg/kernel/veth"
)

// vwire is a vWire this element made, as it made it.
type vwire struct {
	netnsURL string
	spec     veth.Spec
	end      *xconnect.End
}

func (w *vwire) End() *xconnect.End { return w.end }

var (
	serverKey = metadata.NewKey[*vwire]("kernel server vWire")
	clientKey = metadata.NewKey[*vwire]("kernel client vWire")
)

// NewServer returns the element that makes the client's vWire, with its other end in the
// forwarder's namespace fwd (which stays the caller's, open while the element is used).
func NewServer(fwd netns.NsHandle) networkservice.NetworkServiceServer {
	return &server{maker{fwd: fwd, side: ipconfig.Client, role: ifname.Client}}
}

type server struct{ maker }

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	mech := kernel.ToMechanism(req.GetConnection().GetMechanism())
	if mech == nil {
		return next.Server(ctx).Request(ctx, req)
	}
	if err := checkClient(mech); err != nil {
		return nil, err
	}
	m := metadata.Server(ctx)
	old, refresh := serverKey.Load(m)
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	now, err := s.ensure(old, conn, kernel.ToMechanism(conn.GetMechanism()))
	return xconnect.KeepServer(ctx, conn, serverKey, refresh, now, err)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return xconnect.CloseServer(ctx, conn, serverKey, s.remove)
}

// checkClient refuses a client's KERNEL mechanism that names no usable namespace or interface.
func checkClient(mech *kernel.Mechanism) error {
	if mech.GetNetNSURL() == "" {
		return status.Errorf(codes.InvalidArgument,
			"kernel: the client's mechanism parameter %s is missing: a client states its network namespace, file:///proc/<pid>/ns/net "+
				"(a forwarder of another node offers KERNEL last, after its tunnels: if one sent this, the two forwarders share no tunnel for the payload; see their remote mechanisms)",
			kernel.NetNSURL)
	}
	if _, err := nsfile.Path(mech.GetNetNSURL()); err != nil {
		return fmt.Errorf("kernel: the client's mechanism parameter %s: %w", kernel.NetNSURL, err)
	}
	if err := validate.InterfaceName(mech.GetInterfaceName()); err != nil {
		return status.Errorf(codes.InvalidArgument, "kernel: the client's mechanism parameter %s: %v", kernel.InterfaceNameKey, err)
	}
	return nil
}

// Option configures the client.
type Option func(*clientOptions)

type clientOptions struct {
	name func(*networkservice.Connection) string
}

// WithInterfaceName names the endpoint's interface by name(conn) in the mechanism the client
// offers, instead of DefaultName; an endpoint may still choose another.
func WithInterfaceName(name func(*networkservice.Connection) string) Option {
	return func(o *clientOptions) { o.name = name }
}

// DefaultName is the endpoint's interface the client asks for: up to six characters of the
// network service, a dash and eight hex digits of the connection ID's hash ("icmp-r-1f0c9a2e"),
// so that an endpoint with many clients has an interface for each, and a person sees the
// service in the name.
func DefaultName(conn *networkservice.Connection) string {
	service, _, _ := strings.Cut(conn.GetNetworkService(), "@")
	service = strings.Map(func(r rune) rune {
		if r > 0x7f || strings.ContainsRune("/: \t\n\v\f\r", r) {
			return '-'
		}
		return r
	}, service)
	if len(service) > 6 {
		service = service[:6]
	}
	if service == "" {
		service = "nsm"
	}
	sum := sha256.Sum256([]byte(conn.GetId()))
	return service + "-" + hex.EncodeToString(sum[:4])
}

// NewClient returns the element that offers KERNEL to a local endpoint and makes the endpoint's
// vWire, with its other end in the forwarder's namespace fwd (which stays the caller's).
func NewClient(fwd netns.NsHandle, opts ...Option) networkservice.NetworkServiceClient {
	o := clientOptions{name: DefaultName}
	for _, opt := range opts {
		opt(&o)
	}
	return &client{maker: maker{fwd: fwd, side: ipconfig.Endpoint, role: ifname.Endpoint}, name: o.name}
}

type client struct {
	maker
	name func(*networkservice.Connection) string
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	c.offer(req)
	m := metadata.Client(ctx)
	old, refresh := clientKey.Load(m)
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	mech := kernel.ToMechanism(conn.GetMechanism())
	if mech == nil { // the next hop chose a tunnel to another node
		return conn, xconnect.Forget(ctx, m, clientKey, xconnect.Out, c.remove)
	}
	now, err := old, c.checkEndpoint(conn, mech)
	if err == nil {
		now, err = c.ensure(old, conn, mech)
	}
	return xconnect.KeepClient(ctx, conn, clientKey, refresh, now, err, opts...)
}

// offer adds a KERNEL preference unless the request has one.
func (c *client) offer(req *networkservice.NetworkServiceRequest) {
	for _, m := range req.GetMechanismPreferences() {
		if m.GetType() == kernel.MECHANISM {
			return
		}
	}
	mech := &networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM, Parameters: map[string]string{
		kernel.InterfaceNameKey: c.name(req.GetConnection()),
	}}
	req.MechanismPreferences = append(req.MechanismPreferences, mech)
}

// checkEndpoint refuses an endpoint's KERNEL answer that names no usable namespace or interface.
func (c *client) checkEndpoint(conn *networkservice.Connection, mech *kernel.Mechanism) error {
	nse := conn.GetNetworkServiceEndpointName()
	if mech.GetNetNSURL() == "" {
		return status.Errorf(codes.FailedPrecondition,
			"kernel: endpoint %q accepted KERNEL without a network namespace (%s); an endpoint states its own, file:///proc/<pid>/ns/net", nse, kernel.NetNSURL)
	}
	if _, err := nsfile.Path(mech.GetNetNSURL()); err != nil {
		return status.Errorf(codes.FailedPrecondition, "kernel: endpoint %q: %v", nse, err)
	}
	if mech.GetInterfaceName() == "" {
		mech.SetInterfaceName(c.name(conn))
	}
	if err := validate.InterfaceName(mech.GetInterfaceName()); err != nil {
		return status.Errorf(codes.FailedPrecondition, "kernel: endpoint %q chose a bad interface name: %v", nse, err)
	}
	return nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return xconnect.CloseClient(ctx, conn, clientKey, c.remove, opts...)
}

// maker makes and removes the vWires of one side.
type maker struct {
	fwd  netns.NsHandle
	side ipconfig.Side
	role string // ifname role of the forwarder's end
}

// want is the vWire conn asks for on this side.
func (k *maker) want(conn *networkservice.Connection, mech *kernel.Mechanism) *vwire {
	ctx := conn.GetContext()
	return &vwire{
		netnsURL: mech.GetNetNSURL(),
		spec: veth.Spec{
			ConnID:   ifname.ID(conn.GetId(), k.role),
			Name:     mech.GetInterfaceName(),
			MTU:      int(ctx.GetMTU()),
			Side:     k.side,
			Payload:  conn.GetPayload(),
			IP:       proto.CloneOf(ctx.GetIpContext()),
			Ethernet: proto.CloneOf(ctx.GetEthernetContext()),
		},
	}
}

// ensure makes the vWire conn asks for, keeping old where it can, and returns what stands now.
func (k *maker) ensure(old *vwire, conn *networkservice.Connection, mech *kernel.Mechanism) (*vwire, error) {
	want := k.want(conn, mech)
	if old != nil && sameLink(old, want) {
		if proto.Equal(old.spec.IP, want.spec.IP) {
			return old, nil
		}
		return k.readdress(old, want)
	}
	if old != nil {
		if err := k.remove(old); err != nil {
			return old, err
		}
	}
	ns, err := nsfile.Open(want.netnsURL)
	if err != nil {
		return nil, fmt.Errorf("kernel: the %s's namespace: %w", k.side, err)
	}
	defer func() { _ = ns.Close() }()
	peer, err := veth.Create(k.fwd, ns, want.spec)
	if err != nil {
		return nil, fmt.Errorf("kernel: the %s's vWire: %w", k.side, err)
	}
	want.end = k.end(peer, want)
	return want, nil
}

func (k *maker) end(peer string, w *vwire) *xconnect.End {
	return &xconnect.End{Name: peer, Workload: &xconnect.Workload{
		NetNSURL: w.netnsURL, Name: w.spec.Name, Side: k.side, IP: w.spec.IP,
	}}
}

// sameLink reports whether two vWires are the same link, whatever their addresses.
func sameLink(a, b *vwire) bool {
	sa, sb := a.spec, b.spec
	return a.netnsURL == b.netnsURL && sa.ConnID == sb.ConnID && sa.Name == sb.Name && sa.MTU == sb.MTU &&
		sa.Payload == sb.Payload && proto.Equal(sa.Ethernet, sb.Ethernet)
}

// readdress replaces old's share of the IP context on the workload's end with want's. The end is
// new (a new pointer), so that xconnect joins again with the new addresses.
func (k *maker) readdress(old, want *vwire) (*vwire, error) {
	ns, err := nsfile.Open(old.netnsURL)
	if err != nil {
		return old, fmt.Errorf("kernel: the %s's namespace: %w", k.side, err)
	}
	defer func() { _ = ns.Close() }()
	s := old.spec
	if err := ipconfig.Remove(ns, s.Name, s.Side, s.IP, s.ConnID); err != nil {
		return old, fmt.Errorf("kernel: remove the %s's old addresses: %w", k.side, err)
	}
	if err := ipconfig.Apply(ns, s.Name, s.Side, want.spec.IP, s.ConnID); err != nil {
		if rerr := ipconfig.Apply(ns, s.Name, s.Side, s.IP, s.ConnID); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore the old addresses: %w", rerr))
		}
		return old, fmt.Errorf("kernel: the %s's new addresses: %w", k.side, err)
	}
	want.end = k.end(old.end.Name, want)
	return want, nil
}

// remove deletes w.
func (k *maker) remove(w *vwire) error {
	ns, err := nsfile.Open(w.netnsURL)
	if err != nil {
		ns = netns.None() // the workload's namespace is gone, and its end with it
	}
	defer func() { _ = ns.Close() }()
	if err := veth.Delete(k.fwd, ns, w.spec); err != nil {
		return fmt.Errorf("kernel: remove the %s's vWire: %w", k.side, err)
	}
	return nil
}
