// Package kernel is the forwarder's side of NSM's KERNEL mechanism: it makes the vWire of a
// workload on the forwarder's node, a veth pair with one end in the workload's network namespace
// and the other in the forwarder's, for xconnect to join with the connection's other end.
//
// The server (NewServer) faces the client (NSC): its KERNEL mechanism names the client's
// namespace (inodeURL) and interface (name); the client's end gets the client's
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
// Namespaces: a peer may only hand over a namespace it holds. An inode:// URL names one the peer
// passed as a descriptor beside the call, which sdk's recvfd received and holds for the
// connection (the server's from fdpass.FromContext, the client's from recvfd.ClientFiles); the
// element opens the namespace from that descriptor, never from a path. A file:// path names
// whatever its sender likes, in the forwarder's mount namespace (/proc/1/ns/net is the node's),
// so one is accepted only with WithNetNSPaths, the operator's choice, and never one of
// /proc/self, /proc/thread-self or the forwarder's own pid; and no namespace is ever the
// forwarder's own. Each vWire keeps a handle on its workload's namespace until it is removed.
//
// Guarantees:
//   - the server checks the client's mechanism before next: PermissionDenied for a namespace
//     the client does not hold (an inode:// URL whose descriptor did not come, a path while
//     paths are not allowed, a path of the forwarder's own), InvalidArgument for a malformed
//     URL or an interface name Linux refuses; so nothing is made for a refused client. The
//     client checks the endpoint's answer after next (FailedPrecondition, or PermissionDenied as
//     above, naming the endpoint);
//   - a first Request whose vWire cannot be made closes downstream (the caller's values, a fresh
//     deadline) and returns the error, with nothing left in either namespace;
//   - a first Request adopts the vWire a previous run of the forwarder made for the connection,
//     if it is there and is what the Request asks for (veth.Adopt: same namespace, name, MTU,
//     MAC and addresses), so that a restarted forwarder drops no packet of it; otherwise that
//     vWire is removed and made anew;
//   - a refresh keeps the vWire. If the IP context changed, the workload's addresses, routes and
//     neighbours are replaced (the old share removed, the new applied); if the namespace,
//     interface name, MTU, payload or MAC changed, the vWire is made anew. A refresh that fails
//     returns the error and keeps the connection: what still stands is kept, and a later Close
//     removes it;
//   - on the client side, a refresh whose next hop chose another mechanism (heal found an
//     endpoint on another node) removes the vWire;
//   - Close removes the vWire, closes the handle on the workload's namespace, and always calls
//     next.
package kernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
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
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/recvfd"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/log"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/xconnect"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk-kernel/pkg/kernel/veth"
)

// vwire is a vWire this element made, as it made it, and the workload's namespace it holds.
type vwire struct {
	netnsURL string
	ns       netns.NsHandle
	spec     veth.Spec
	end      *xconnect.End
}

func (w *vwire) End() *xconnect.End { return w.end }

var (
	serverKey = metadata.NewKey[*vwire]("kernel server vWire")
	clientKey = metadata.NewKey[*vwire]("kernel client vWire")
)

// Option configures the elements.
type Option func(*options)

type options struct {
	name  func(*networkservice.Connection) string
	paths bool
}

// WithInterfaceName names the endpoint's interface by name(conn) in the mechanism the client
// offers, instead of DefaultName; an endpoint may still choose another. The server ignores it.
func WithInterfaceName(name func(*networkservice.Connection) string) Option {
	return func(o *options) { o.name = name }
}

// WithNetNSPaths lets peers name namespaces by file:// path, opened in the forwarder's mount
// namespace (still never /proc/self, /proc/thread-self or the forwarder's own namespace): for a
// mesh whose operator trusts every client and endpoint with the forwarder's view of the node
// (processes in `ip netns` namespaces). Without it, namespaces come only as descriptors.
func WithNetNSPaths() Option { return func(o *options) { o.paths = true } }

func newOptions(opts []Option) options {
	o := options{name: DefaultName}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// NewServer returns the element that makes the client's vWire, with its other end in the
// forwarder's namespace fwd (which stays the caller's, open while the element is used).
func NewServer(fwd netns.NsHandle, opts ...Option) networkservice.NetworkServiceServer {
	o := newOptions(opts)
	return &server{maker{fwd: fwd, side: ipconfig.Client, role: ifname.Client, paths: o.paths}}
}

type server struct{ maker }

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	mech := kernel.ToMechanism(req.GetConnection().GetMechanism())
	if mech == nil {
		return next.Server(ctx).Request(ctx, req)
	}
	files := fdpass.FromContext(ctx)
	if err := s.checkClient(files, mech); err != nil {
		return nil, err
	}
	m := metadata.Server(ctx)
	old, refresh := serverKey.Load(m)
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	now, err := s.ensure(ctx, files, old, conn, kernel.ToMechanism(conn.GetMechanism()))
	return xconnect.KeepServer(ctx, conn, serverKey, refresh, now, err)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return xconnect.CloseServer(ctx, conn, serverKey, s.discard)
}

// checkClient refuses a client's KERNEL mechanism that names no namespace the client holds, or
// no usable interface.
func (s *server) checkClient(files *fdpass.Files, mech *kernel.Mechanism) error {
	if mech.GetNetNSURL() == "" {
		return status.Errorf(codes.InvalidArgument,
			"kernel: the client's mechanism parameter %s is missing: a client states its network namespace, passed as a descriptor (inode://) "+
				"(a forwarder of another node offers KERNEL last, after its tunnels: if one sent this, the two forwarders share no tunnel for the payload; see their remote mechanisms)",
			kernel.NetNSURL)
	}
	if err := s.held(files, mech.GetNetNSURL()); err != nil {
		return fmt.Errorf("kernel: the client's mechanism parameter %s: %w", kernel.NetNSURL, err)
	}
	if err := validate.InterfaceName(mech.GetInterfaceName()); err != nil {
		return status.Errorf(codes.InvalidArgument, "kernel: the client's mechanism parameter %s: %v", kernel.InterfaceNameKey, err)
	}
	return nil
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
	o := newOptions(opts)
	return &client{maker: maker{fwd: fwd, side: ipconfig.Endpoint, role: ifname.Endpoint, paths: o.paths}, name: o.name}
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
		return conn, xconnect.Forget(ctx, m, clientKey, xconnect.Out, c.discard)
	}
	files := recvfd.ClientFiles(ctx)
	now, err := old, c.checkEndpoint(files, conn, mech)
	if err == nil {
		now, err = c.ensure(ctx, files, old, conn, mech)
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

// checkEndpoint refuses an endpoint's KERNEL answer that names no namespace the endpoint holds,
// or no usable interface.
func (c *client) checkEndpoint(files *fdpass.Files, conn *networkservice.Connection, mech *kernel.Mechanism) error {
	nse := conn.GetNetworkServiceEndpointName()
	if mech.GetNetNSURL() == "" {
		return status.Errorf(codes.FailedPrecondition,
			"kernel: endpoint %q accepted KERNEL without a network namespace (%s); an endpoint states its own, file:///proc/<pid>/ns/net, and sends it with sendfd's server", nse, kernel.NetNSURL)
	}
	if err := c.held(files, mech.GetNetNSURL()); err != nil {
		if status.Code(err) == codes.PermissionDenied {
			return fmt.Errorf("kernel: endpoint %q: %w", nse, err)
		}
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
	return xconnect.CloseClient(ctx, conn, clientKey, c.discard, opts...)
}

// maker makes and removes the vWires of one side.
type maker struct {
	fwd   netns.NsHandle
	side  ipconfig.Side
	role  string // ifname role of the forwarder's end
	paths bool   // peers may name namespaces by path
}

// held fails unless u names a namespace the peer holds: one it passed (in files), or a path when
// paths are allowed.
func (k *maker) held(files *fdpass.Files, u string) error {
	if fdpass.IsURL(u) {
		if err := fdpass.Check(u); err != nil {
			return err
		}
		if files == nil || files.Get(u) == nil {
			return status.Errorf(codes.PermissionDenied,
				"the %s names its network namespace %s but did not pass it; a peer hands over only a namespace it holds, sent as a descriptor beside the call (grpcfd), as NSM's clients and endpoints do", k.side, u)
		}
		return nil
	}
	path, err := nsfile.Path(u)
	if err != nil {
		return err
	}
	if !k.paths {
		return status.Errorf(codes.PermissionDenied,
			"the %s names its network namespace by path (%s), which this forwarder does not open for peers: pass it as a descriptor beside the call (inode://, grpcfd), or let its operator allow paths (forwarder.WithNetNSPaths, NSM_ALLOW_NETNS_PATHS)", k.side, u)
	}
	if ownProc(path) {
		return status.Errorf(codes.PermissionDenied, "the %s names %s, which is the forwarder's own; name the workload's namespace", k.side, u)
	}
	return nil
}

// ownProc reports whether path is under /proc/self, /proc/thread-self or /proc/<this pid>: in
// the forwarder they are the forwarder's.
func ownProc(path string) bool {
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/proc/"), "/")
	return strings.HasPrefix(path, "/proc/") && (first == "self" || first == "thread-self" || first == strconv.Itoa(os.Getpid()))
}

// open returns a handle on the namespace u names, checked by held: from the passed descriptor,
// or the path. The forwarder's own namespace is refused whichever way it came.
func (k *maker) open(files *fdpass.Files, u string) (netns.NsHandle, error) {
	var ns netns.NsHandle
	var err error
	if fdpass.IsURL(u) {
		ns, err = nsfile.FromFile(files.Get(u), u)
	} else {
		ns, err = nsfile.Open(u)
	}
	if err != nil {
		return netns.None(), err
	}
	if nsfile.Same(ns, k.fwd) {
		_ = ns.Close()
		return netns.None(), status.Errorf(codes.PermissionDenied, "the %s's namespace %s is the forwarder's own; name the workload's namespace", k.side, u)
	}
	return ns, nil
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
// files are the descriptors the peer passed for the connection.
func (k *maker) ensure(ctx context.Context, files *fdpass.Files, old *vwire, conn *networkservice.Connection, mech *kernel.Mechanism) (*vwire, error) {
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
	if err := k.held(files, want.netnsURL); err != nil {
		return nil, fmt.Errorf("kernel: the %s's namespace: %w", k.side, err)
	}
	ns, err := k.open(files, want.netnsURL)
	if err != nil {
		return nil, fmt.Errorf("kernel: the %s's namespace: %w", k.side, err)
	}
	if old == nil {
		// A restarted forwarder: the vWire its previous run made for this connection may stand.
		kept, err := veth.Adopt(k.fwd, ns, want.spec)
		if err != nil {
			_ = ns.Close()
			return nil, fmt.Errorf("kernel: adopt the %s's vWire: %w", k.side, err)
		}
		if kept {
			want.ns = ns
			want.end = k.end(veth.PeerName(want.spec.ConnID), want)
			log.FromContext(ctx).Info("adopted the vWire a previous run made", "side", k.side.String(), "interface", want.end.Name)
			return want, nil
		}
	}
	peer, err := veth.Create(k.fwd, ns, want.spec)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("kernel: the %s's vWire: %w", k.side, err)
	}
	want.ns = ns
	want.end = k.end(peer, want)
	return want, nil
}

func (k *maker) end(peer string, w *vwire) *xconnect.End {
	return &xconnect.End{Name: peer, Workload: &xconnect.Workload{
		NetNS: w.ns, Name: w.spec.Name, Side: k.side, IP: w.spec.IP,
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
	ns := old.ns
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
	want.ns = old.ns
	want.end = k.end(old.end.Name, want)
	return want, nil
}

// remove deletes w and lets go of its workload's namespace; if deleting fails, w stays whole for
// another try.
func (k *maker) remove(w *vwire) error {
	if err := veth.Delete(k.fwd, w.ns, w.spec); err != nil {
		return fmt.Errorf("kernel: remove the %s's vWire: %w", k.side, err)
	}
	return w.ns.Close()
}

// discard removes w for good, on Close: its namespace is let go of even if deleting failed.
func (k *maker) discard(w *vwire) error {
	err := k.remove(w)
	if err != nil {
		_ = w.ns.Close()
	}
	return err
}
