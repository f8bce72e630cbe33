// Package nsmgr is the Network Service Manager, one per node. A client's Request arrives here;
// the manager finds endpoints for the network service in the registry, picks one (trying the
// next if it fails), picks one of its node's forwarders that fits the match, and passes the
// Request to that forwarder, which reaches the endpoint directly or through the endpoint's own
// manager on another node. The manager is also its node's registry entry point: endpoints
// register through it (with the manager's URL, so other nodes come through it) and forwarders
// register with it (they stay on the node). With the mesh's registry (WithRegistry), the
// services and endpoints every Request looks up are answered from a cache that watches keep
// current (registry/common/querycache), not by a registry call per Request.
//
// Its client side joins the server's events (begin), so when a forwarder or the path under it
// breaks, heal re-enters the whole chain and discovery may pick anew.
//
// A client's network namespace arrives as a descriptor beside its Request (an inode:// URL,
// recvfd); the manager holds it for the connection until Close and sends it on to the forwarder
// with every call, also those of heal, which has no client call to take it from. A file:// path a
// client names is passed on unopened: the forwarder decides whether paths are allowed. An
// endpoint or a forwarder may register with its socket passed the same way (an inode:// URL):
// the manager keeps the socket, dials a forwarder through it, and hands an endpoint's to the
// forwarders that find it (registry/common/recvfd).
//
// A caller that goes away (a client that crashed, a forwarder of another node gone for good) is
// noticed by the end of the gRPC transport its Requests came over: unless it requests again
// over another within a grace (WithOrphanGrace), its connection is closed along the path
// (orphan; the manager serves with orphan's stats handler, grpcserve.NeedsOptions). A forwarder
// of the node that dies the same way, or unregisters, and does not register again within the
// same grace is gone for good: the manager tells its caller (WithForwarderGone, where a kernel
// manager sweeps what the forwarder built) and unregisters it, so it is chosen no more
// (registry/common/forwardergone).
//
// The manager labels each connection with its own node, from NODE_NAME (clientinfo, which keeps
// a label the client set): the first manager a Request meets is the client's, so matches may
// select endpoints on the client's node ({"nodeName": "{{.nodeName}}"}) and a supplier knows
// where to start one (spawn), as in NSM, whose managers do the same.
package nsmgr

import (
	"context"
	"net/url"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/clientinfo"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/discover"
	"vwire.dev/sdk/pkg/networkservice/common/discoverforwarder"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/recvfd"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/common/orphan"
	"vwire.dev/sdk/pkg/networkservice/common/roundrobin"
	regauthorize "vwire.dev/sdk/pkg/registry/common/authorize"
	"vwire.dev/sdk/pkg/registry/common/forwardergone"
	regrecvfd "vwire.dev/sdk/pkg/registry/common/recvfd"
	regupdatepath "vwire.dev/sdk/pkg/registry/common/updatepath"
	regvalidate "vwire.dev/sdk/pkg/registry/common/validate"
	regadapters "vwire.dev/sdk/pkg/registry/core/adapters"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/token"
)

// Nsmgr serves the NetworkService, MonitorConnection and both registry services.
type Nsmgr interface {
	endpoint.Endpoint
}

// Option configures a manager.
type Option func(*options)

type options struct {
	name          string
	url           *url.URL
	registryConn  grpc.ClientConnInterface
	dial          []dial.Option
	authorize     []authorize.Option
	monitor       []monitor.Option
	registry      []regauthorize.Option
	grace         time.Duration
	forwarderGone forwardergone.Watch
}

// WithName names the manager: its path segment and its tokens' issuer.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithURL is the address the manager serves on, announced for the endpoints of its node.
func WithURL(u *url.URL) Option { return func(o *options) { o.url = u } }

// WithRegistry sends registrations and queries to the mesh's registry over cc. Without it the
// manager keeps a registry of its own, enough for a mesh of one node.
func WithRegistry(cc grpc.ClientConnInterface) Option {
	return func(o *options) { o.registryConn = cc }
}

// WithDialOptions configures how forwarders are reached.
func WithDialOptions(opts ...dial.Option) Option { return func(o *options) { o.dial = opts } }

// WithAuthorizeOptions replaces the default policies.
func WithAuthorizeOptions(opts ...authorize.Option) Option {
	return func(o *options) { o.authorize = opts }
}

// WithMonitorOptions configures the manager's MonitorConnections (monitor.WithOperators: who
// sees every connection).
func WithMonitorOptions(opts ...monitor.Option) Option {
	return func(o *options) { o.monitor = opts }
}

// WithRegistryAuthorizeOptions configures the authorization of the registrations the manager
// keeps itself, its node's forwarders' (regauthorize.WithIdentity: only a forwarder's registrant
// may change or remove it); the registry judges the rest.
func WithRegistryAuthorizeOptions(opts ...regauthorize.Option) Option {
	return func(o *options) { o.registry = opts }
}

// WithOrphanGrace sets how long a connection outlives the transport its caller's last Request
// came over, and how long a forwarder of the node may stay away before it is gone for good
// (default orphan.DefaultGrace).
func WithOrphanGrace(d time.Duration) Option { return func(o *options) { o.grace = d } }

// WithForwarderGone follows the node's forwarders with watch: called at each registration while
// the forwarder lives, told when it is gone for good (forwardergone.Watch).
func WithForwarderGone(watch forwardergone.Watch) Option {
	return func(o *options) { o.forwarderGone = watch }
}

// NewServer returns a manager whose tokens come from gen; its background work ends with ctx.
func NewServer(ctx context.Context, gen token.GeneratorFunc, opts ...Option) Nsmgr {
	o := &options{name: "nsmgr", grace: orphan.DefaultGrace}
	for _, opt := range opts {
		opt(o)
	}
	if o.url == nil {
		panic("nsmgr.NewServer: WithURL is required: endpoints of this node are announced with it")
	}
	sockets := fdpass.NewSockets() // of endpoints and forwarders that registered by descriptor
	reg := newRegistry(ctx, o.url, o.registryConn, o.registry,
		forwardergone.NewNSE(ctx, sockets, o.forwarderGone, forwardergone.WithGrace(o.grace)))
	ep := endpoint.NewServer(ctx, gen,
		endpoint.WithName(o.name),
		endpoint.WithAuthorizeOptions(o.authorize...),
		endpoint.WithMonitorOptions(o.monitor...),
		endpoint.WithAdditionalFunctionality(
			// closes what a caller that went away left
			orphan.NewServer(ctx, orphan.WithGrace(o.grace)),
			recvfd.NewServer(),     // a client's namespace comes as a descriptor; its client chain sends it on
			clientinfo.NewServer(), // before discover, whose matches may name the client's node
			discover.NewServer(reg.ns, reg.nse),
			roundrobin.NewServer(),
			discoverforwarder.NewServer(reg.forwarders),
			connect.NewServer(client.NewClient(ctx,
				client.WithName(o.name),
				client.WithTokenGenerator(gen),
				client.WithoutRetry(),
				client.WithDialOptions(append(o.dial, dial.WithSockets(sockets))...),
			)),
		),
	)
	// Callers over gRPC register and find sockets passed by descriptor; the manager's own
	// lookups (discover) need none. Their registrations go on with the path of who made them
	// (updatepath), for the registry to judge the registrant, not this manager. A malformed or
	// oversized registration is refused here (validate), before the manager keeps anything of
	// it (a forwarder's registration stays here, a passed socket too).
	return &nsmgr{Endpoint: ep, reg: reg,
		servedNS: regnext.Chain(regvalidate.NewNS(), regupdatepath.NewNS(o.name), reg.ns),
		servedNSE: regnext.Chain(regvalidate.NewNSE(regvalidate.WithPassedSockets()), regupdatepath.NewNSE(o.name),
			regrecvfd.NewServer(sockets), reg.nse),
	}
}

type nsmgr struct {
	endpoint.Endpoint
	reg       *nodeRegistry
	servedNS  regnext.NS
	servedNSE regnext.NSE
}

// ServerOptions tell orphan which transport each call came over (grpcserve.NeedsOptions).
func (n *nsmgr) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(orphan.StatsHandler())}
}

func (n *nsmgr) Register(s *grpc.Server) {
	n.Endpoint.Register(s)
	registry.RegisterNetworkServiceRegistryServer(s, regadapters.NSServer(n.servedNS))
	registry.RegisterNetworkServiceEndpointRegistryServer(s, regadapters.NSEServer(n.servedNSE))
}
