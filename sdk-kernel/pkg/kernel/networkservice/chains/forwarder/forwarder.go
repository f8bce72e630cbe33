// Package forwarder is vwire's kernel forwarder: the data plane agent of a node, which turns each
// connection that its Network Service Manager sends it into kernel interfaces: the client's
// vWire, the endpoint's vWire (same node) or a tunnel to the forwarder of the endpoint's node
// (WireGuard for IP payload, VXLAN for Ethernet), joined in the forwarder's namespace.
//
// The chain: the standard endpoint chain (path, token, authorize, metadata, timeout, monitor),
// then discover and roundrobin, which find the connection's endpoint by the name the nsmgr put
// in the request (through the nsmgr's registry: a local endpoint comes with its own URL, a remote
// one with its nsmgr's; the services and endpoints found are cached by querycache, kept current
// by watches, so that refreshes and Closes do not ask the registry again), then xconnect, the
// mechanism elements facing the previous hop (KERNEL from the client, or a tunnel from another
// node), and connect to the next hop, whose client chain offers the tunnels (in
// WithRemoteMechanisms' order) and KERNEL, in that order: a local endpoint takes the first it
// supports (KERNEL), another node's forwarder the first it supports (a tunnel).
// mechanismtranslation keeps the two hops' mechanisms apart.
//
// Workloads' namespaces come as descriptors beside the calls, named by inode:// URLs (NSM's
// grpcfd): recvfd, first after the endpoint chain, receives the client's from the nsmgr and
// holds it for the connection; the client chain's recvfd receives the endpoint's with its answer.
// The kernel elements open namespaces from those descriptors only; a file:// path is refused
// (PermissionDenied) unless WithNetNSPaths allows it.
//
// The forwarder works in the network namespace given to NewServer: every interface, route and
// rule it makes is there or in a workload's namespace. What a previous run left there keeps
// passing traffic: the mechanism elements and xconnect adopt it when heal sends its connection
// again and it is what the connection asks for. Before serving, mark it (ifname.Mark); once heal
// has had time to send every connection, remove what nothing adopted (ifname.SweepMarked).
package forwarder

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/wireguard"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/discover"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/recvfd"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/common/roundrobin"
	"vwire.dev/sdk/pkg/registry/common/querycache"
	regrecvfd "vwire.dev/sdk/pkg/registry/common/recvfd"
	regadapters "vwire.dev/sdk/pkg/registry/core/adapters"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/token"

	"vwire.dev/sdk-kernel/pkg/kernel/linkstats"
	kernelmech "vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanisms/kernel"
	vxlanmech "vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanisms/vxlan"
	wgmech "vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanisms/wireguard"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanismtranslation"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/xconnect"
)

// Option configures the forwarder.
type Option func(*options)

type options struct {
	name      string
	tunnelIP  netip.Addr
	vxlanPort uint16
	remote    []string
	key       *wgtypes.Key
	wireguard []wgmech.Option
	dial      []dial.Option
	authorize []authorize.Option
	monitor   []monitor.Option
	kernel    []kernelmech.Option
}

// WithName names the forwarder: its path segment, its tokens' issuer, its registration.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithTunnelIP sets the forwarder's underlay address, the source of its tunnels to other nodes.
// Without it the forwarder serves connections within its node only.
func WithTunnelIP(ip netip.Addr) Option { return func(o *options) { o.tunnelIP = ip } }

// WithVXLANPort sets the UDP port of VXLAN (default 4789); every forwarder needs the same.
func WithVXLANPort(port uint16) Option { return func(o *options) { o.vxlanPort = port } }

// WithRemoteMechanisms sets the tunnels the forwarder offers and accepts, in the order it
// prefers them (default WIREGUARD, VXLAN; WireGuard is left out for ETHERNET payload).
func WithRemoteMechanisms(types ...string) Option {
	return func(o *options) { o.remote = types }
}

// WithWireGuardKey sets the forwarder's WireGuard private key (default: a new one).
func WithWireGuardKey(key wgtypes.Key) Option { return func(o *options) { o.key = &key } }

// WithWireGuardOptions configures the WireGuard elements (MTU, wireguard-go's logger).
func WithWireGuardOptions(opts ...wgmech.Option) Option {
	return func(o *options) { o.wireguard = append(o.wireguard, opts...) }
}

// WithNetNSPaths lets clients and endpoints name their namespaces by file:// path, opened in
// the forwarder's mount namespace, besides passing them as descriptors: for a mesh whose
// operator trusts every workload with the forwarder's view of the node (see kernel.WithNetNSPaths).
func WithNetNSPaths() Option {
	return func(o *options) { o.kernel = append(o.kernel, kernelmech.WithNetNSPaths()) }
}

// WithDialOptions configures how next hops are reached.
func WithDialOptions(opts ...dial.Option) Option { return func(o *options) { o.dial = opts } }

// WithAuthorizeOptions replaces the default policies.
func WithAuthorizeOptions(opts ...authorize.Option) Option {
	return func(o *options) { o.authorize = opts }
}

// WithMonitorOptions configures the forwarder's MonitorConnections (monitor.WithOperators: who
// sees every connection, as an operator's tools do).
func WithMonitorOptions(opts ...monitor.Option) Option {
	return func(o *options) { o.monitor = opts }
}

// NewServer returns a forwarder working in namespace fwd (the caller's, open while the forwarder
// is used), finding endpoints through the registry reached over cc (its nsmgr; dialed with
// registry/chains/client.Dial, so that the sockets of endpoints that registered by descriptor
// come with the results), with tokens from gen; its background work ends with ctx. It fails for
// a remote mechanism it does not know.
func NewServer(ctx context.Context, gen token.GeneratorFunc, cc grpc.ClientConnInterface, fwd netns.NsHandle, opts ...Option) (endpoint.Endpoint, error) {
	o := &options{name: "forwarder", remote: []string{wireguard.MECHANISM, vxlan.MECHANISM}}
	for _, opt := range opts {
		opt(o)
	}
	servers := map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: kernelmech.NewServer(fwd, o.kernel...)}
	var clients []networkservice.NetworkServiceClient
	if o.tunnelIP.IsValid() {
		if o.key == nil {
			key, err := wgtypes.GeneratePrivateKey()
			if err != nil {
				return nil, fmt.Errorf("forwarder: make a WireGuard key: %w", err)
			}
			o.key = &key
		}
		vni := vxlanmech.NewVNIPool()
		vxlanOpts := []vxlanmech.Option{vxlanmech.WithVNIPool(vni)}
		if o.vxlanPort != 0 {
			vxlanOpts = append(vxlanOpts, vxlanmech.WithPort(o.vxlanPort))
		}
		for _, t := range o.remote {
			switch t {
			case wireguard.MECHANISM:
				servers[t] = wgmech.NewServer(fwd, o.tunnelIP, *o.key, o.wireguard...)
				clients = append(clients, wgmech.NewClient(fwd, o.tunnelIP, *o.key, o.wireguard...))
			case vxlan.MECHANISM:
				servers[t] = vxlanmech.NewServer(fwd, o.tunnelIP, vxlanOpts...)
				clients = append(clients, vxlanmech.NewClient(fwd, o.tunnelIP, vxlanOpts...))
			default:
				return nil, fmt.Errorf("forwarder: remote mechanism %q is not supported; use %s or %s", t, wireguard.MECHANISM, vxlan.MECHANISM)
			}
		}
	}
	clients = append(clients,
		kernelmech.NewClient(fwd, o.kernel...), // last: local endpoints take it, forwarders a tunnel
		recvfd.NewClient(),                     // the endpoint's namespace, for the kernel client on the way back
	)

	sockets := fdpass.NewSockets() // of local endpoints that registered by descriptor
	nextHop := client.NewClient(ctx,
		client.WithName(o.name),
		client.WithTokenGenerator(gen),
		client.WithoutRetry(), // the nsmgr's client retries and heals
		client.WithDialOptions(append(o.dial, dial.WithSockets(sockets))...),
		client.WithAdditionalFunctionality(append([]networkservice.NetworkServiceClient{
			mechanismtranslation.NewClient(), // before the elements that offer the next hop's mechanisms
		}, clients...)...),
	)
	// Every Request and Close looks its endpoint up: answered from memory, kept current by a watch.
	ns := regnext.Chain(querycache.NewNS(ctx), regadapters.NSClient(registry.NewNetworkServiceRegistryClient(cc)))
	// A local endpoint's socket, passed by descriptor, comes with the result that names it.
	nse := regnext.Chain(querycache.NewNSE(ctx), regrecvfd.NewClient(sockets), regadapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc)))
	return endpoint.NewServer(ctx, gen,
		endpoint.WithName(o.name),
		// A forwarder that replaces another (a new pod, with a name of its own) keeps the
		// connection's ID, under which its predecessor named what it built: it adopts that.
		endpoint.WithSuccession(),
		endpoint.WithAuthorizeOptions(o.authorize...),
		endpoint.WithMonitorOptions(o.monitor...),
		endpoint.WithAdditionalFunctionality(
			recvfd.NewServer(), // the client's namespace, passed by the nsmgr, held for the connection
			discover.NewServer(ns, nse),
			roundrobin.NewServer(),
			xconnect.NewServer(fwd), // before both sides' mechanism elements: it acts once both ends exist
			// after xconnect, whose ends it reads: bytes and packets of each vWire, from the kernel
			linkstats.NewServer(ctx, fwd),
			mechanisms.NewServer(servers),
			connect.NewServer(nextHop),
		),
	), nil
}
