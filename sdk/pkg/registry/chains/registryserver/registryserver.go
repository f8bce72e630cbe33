// Package registryserver is the mesh's registry: it refuses malformed records, stores network services and endpoints in
// memory (or in the stores WithStores gives), lets only an endpoint's registrant change or remove it, gives services without a payload
// the default one, removes endpoints whose registration expired, and streams every change to
// watchers.
package registryserver

import (
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/registry/common/authorize"
	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/expire"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/setpayload"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/common/validate"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
)

// Option configures the registry.
type Option func(*options)

type options struct {
	name   string
	expire []expire.Option
	ns     next.NS
	nse    next.NSE
}

// WithName is the registry's id in records' path_ids.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithExpireOptions configures endpoint expiry (the default lifetime of a registration).
func WithExpireOptions(opts ...expire.Option) Option { return func(o *options) { o.expire = opts } }

// WithStores replaces the in-memory stores that end the chains (sdk-k8s keeps the records in
// Kubernetes custom resources); the elements before them stay.
func WithStores(ns next.NS, nse next.NSE) Option {
	return func(o *options) { o.ns, o.nse = ns, nse }
}

// Server is the registry's two chains.
type Server struct {
	NS  next.NS
	NSE next.NSE
}

// New returns a registry.
func New(opts ...Option) *Server {
	o := &options{name: "registry"}
	for _, opt := range opts {
		opt(o)
	}
	if o.ns == nil || o.nse == nil {
		o.ns, o.nse = memory.NewNS(), memory.NewNSE()
	}
	return &Server{
		// Services have no owner: every endpoint of a service may register it.
		NS: next.Chain(
			validate.NewNS(),
			updatepath.NewNS(o.name),
			begin.NewNS(), // one change per name at a time
			setpayload.NewNS(),
			o.ns,
		),
		NSE: next.Chain(
			validate.NewNSE(),
			updatepath.NewNSE(o.name),
			begin.NewNSE(), // one change per name at a time; expiry re-enters here
			authorize.NewNSE(),
			expire.NewNSE(o.expire...),
			o.nse,
		),
	}
}

// Register adds both registry services to s.
func (r *Server) Register(s *grpc.Server) {
	registry.RegisterNetworkServiceRegistryServer(s, adapters.NSServer(r.NS))
	registry.RegisterNetworkServiceEndpointRegistryServer(s, adapters.NSEServer(r.NSE))
}
