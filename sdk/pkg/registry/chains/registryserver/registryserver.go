// Package registryserver is the mesh's registry: it refuses malformed records, stores network
// services and endpoints in memory (or in the stores WithStores gives), authorizes every Register
// and Unregister (registry/common/authorize: verified tokens, a consistent path, only an
// endpoint's registrant may change or remove it, and only one of a service's may remove it),
// gives services without a payload the default one, removes endpoints whose registration expired, and streams every change to watchers.
//
// Callers send their tokens as per-RPC credentials (token.NewPerRPCCredentials) over mutual TLS
// (spiffe.ServerCredentials on the server); a component that passes registrations on (an nsmgr)
// sends the path of its callers too (registry/common/updatepath). A registry built without
// WithAuthorizeOptions is insecure: it keeps owners by the identity a caller claims and checks
// nothing, as before identities; a component with an identity passes
// WithAuthorizeOptions(authorize.WithIdentity(source)), and its policies if it has its own.
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
	name      string
	expire    []expire.Option
	ns        next.NS
	nse       next.NSE
	authorize []authorize.Option
}

// WithName is the registry's id in records' path_ids.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithAuthorizeOptions configures authorization (see registry/common/authorize): WithIdentity
// for a registry with an identity, WithPolicies for an operator's policies. Without them the
// registry has no identity and keeps owners by claim.
func WithAuthorizeOptions(opts ...authorize.Option) Option {
	return func(o *options) { o.authorize = opts }
}

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
		NS: next.Chain(
			validate.NewNS(),
			updatepath.NewNS(o.name),        // the path of the callers, for authorize
			begin.NewNS(),                   // one change per name at a time
			authorize.NewNS(o.authorize...), // every endpoint of a service registers it
			setpayload.NewNS(),
			o.ns,
		),
		NSE: next.Chain(
			validate.NewNSE(),
			updatepath.NewNSE(o.name),
			begin.NewNSE(), // one change per name at a time; expiry re-enters here
			authorize.NewNSE(o.authorize...),
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
