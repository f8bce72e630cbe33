package nsmgr

import (
	"context"
	"net/url"
	"slices"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/registry/common/authorize"
	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/expire"
	"vwire.dev/sdk/pkg/registry/common/localbypass"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/querycache"
	"vwire.dev/sdk/pkg/registry/common/setpayload"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
)

// forwarderService is the network service forwarders register for; discoverforwarder's default.
const forwarderService = "forwarder"

// nodeRegistry is the manager's view of the registry: services and endpoints of the mesh, and
// the forwarders of its own node.
type nodeRegistry struct {
	ns         next.NS
	nse        next.NSE
	forwarders next.NSE
}

// newRegistry returns the manager's registry view; the watches of its query cache end with ctx.
// authz judges the registrations of forwarders, which stay here; gone notices those that die.
func newRegistry(ctx context.Context, self *url.URL, cc grpc.ClientConnInterface, authz []authorize.Option, gone next.NSE) *nodeRegistry {
	forwarders := next.Chain(authorize.NewNSE(authz...), gone, expire.NewNSE(), memory.NewNSE())
	var ns next.NS
	var nse next.NSE
	if cc != nil {
		// Every Request looks its service and endpoints up, here and in the forwarders that
		// ask this manager (Close its endpoint): answered from memory, kept current by a watch.
		ns = next.Chain(querycache.NewNS(ctx), adapters.NSClient(registry.NewNetworkServiceRegistryClient(cc)))
		nse = next.Chain(querycache.NewNSE(ctx), adapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc)))
	} else {
		ns = next.Chain(setpayload.NewNS(), memory.NewNS())
		nse = next.Chain(expire.NewNSE(), memory.NewNSE())
	}
	return &nodeRegistry{
		ns: next.Chain(begin.NewNS(), ns),
		nse: next.Chain(
			begin.NewNSE(),
			&forwarderSwitch{forwarders: forwarders},
			localbypass.NewNSE(self.String()), // endpoints of this node are reached through this manager
			nse,
		),
		forwarders: forwarders,
	}
}

// forwarderSwitch keeps the registrations of forwarders, and answers queries for them, on this
// node: a forwarder serves only its own node, so the mesh's registry need not know it.
type forwarderSwitch struct {
	forwarders next.NSE
}

func isForwarder(nse *registry.NetworkServiceEndpoint) bool {
	return slices.Contains(nse.GetNetworkServiceNames(), forwarderService)
}

func (f *forwarderSwitch) Register(ctx context.Context, nse *registry.NetworkServiceEndpoint) (*registry.NetworkServiceEndpoint, error) {
	if isForwarder(nse) {
		return f.forwarders.Register(ctx, nse)
	}
	return next.Of[*registry.NetworkServiceEndpoint](ctx).Register(ctx, nse)
}

func (f *forwarderSwitch) Find(ctx context.Context, q *next.Query[*registry.NetworkServiceEndpoint], send func(*next.Event[*registry.NetworkServiceEndpoint]) error) error {
	if isForwarder(q.Record) {
		return f.forwarders.Find(ctx, q, send)
	}
	return next.Of[*registry.NetworkServiceEndpoint](ctx).Find(ctx, q, send)
}

func (f *forwarderSwitch) Unregister(ctx context.Context, nse *registry.NetworkServiceEndpoint) error {
	if isForwarder(nse) {
		return f.forwarders.Unregister(ctx, nse)
	}
	return next.Of[*registry.NetworkServiceEndpoint](ctx).Unregister(ctx, nse)
}
