// Package endpoint is the chain every Network Service Endpoint starts from: it keeps the path and
// tokens, authorizes, keeps per-connection state, closes connections whose client stopped
// refreshing, tells monitors about every connection, and counts calls and connections (metrics,
// to the process's OpenTelemetry MeterProvider). An NSE author appends the elements that
// make their service (addresses, DNS, interfaces) with WithAdditionalFunctionality, and serves
// the result with Serve.
package endpoint

import (
	"context"
	"net/url"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/metrics"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/common/timeout"
	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/common/updatetoken"
	"vwire.dev/sdk/pkg/networkservice/common/validate"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/token"
)

// Endpoint is a NetworkService chain that also serves MonitorConnections.
type Endpoint interface {
	networkservice.NetworkServiceServer
	networkservice.MonitorConnectionServer
	// Register adds the endpoint's services to s.
	Register(s *grpc.Server)
}

// Option configures an endpoint.
type Option func(*options)

type options struct {
	name      string
	authorize []authorize.Option
	authz     networkservice.NetworkServiceServer // replaces authorize.NewServer(authorize...)
	monitor   []monitor.Option
	extra     []networkservice.NetworkServiceServer
	path      []updatepath.Option
}

// WithName names the endpoint: its path segment and the issuer of its tokens.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithSuccession makes the endpoint take over the connection ID of the hop it displaces in a
// path (updatepath.WithSuccession): for a forwarder, whose successor adopts what it built.
func WithSuccession() Option {
	return func(o *options) { o.path = append(o.path, updatepath.WithSuccession()) }
}

// WithAuthorizeOptions replaces the default policies (valid, unexpired tokens; a consistent path).
func WithAuthorizeOptions(opts ...authorize.Option) Option {
	return func(o *options) { o.authorize = opts }
}

// WithAuthorizeServer puts s where the chain authorizes (after updatetoken, before metadata),
// in place of authorize.NewServer with WithAuthorizeOptions' options: NSM's option, for an
// element of the author's own. authorize.NewServer() without options verifies no token; with
// identities, authorize.NewServer(authorize.WithIdentity(src)) is what NSM's default checks.
func WithAuthorizeServer(s networkservice.NetworkServiceServer) Option {
	if s == nil {
		panic("endpoint.WithAuthorizeServer: nil server")
	}
	return func(o *options) { o.authz = s }
}

// WithMonitorOptions configures the endpoint's MonitorConnections (monitor.WithOperators: who
// sees every connection).
func WithMonitorOptions(opts ...monitor.Option) Option {
	return func(o *options) { o.monitor = opts }
}

// WithAdditionalFunctionality appends the author's elements to the standard chain.
func WithAdditionalFunctionality(elements ...networkservice.NetworkServiceServer) Option {
	return func(o *options) { o.extra = append(o.extra, elements...) }
}

// NewServer returns an endpoint whose tokens come from gen; its background work (timeouts,
// monitor streams) ends with ctx.
func NewServer(ctx context.Context, gen token.GeneratorFunc, opts ...Option) Endpoint {
	if gen == nil {
		panic("endpoint.NewServer: nil token generator")
	}
	o := &options{name: "endpoint"}
	for _, opt := range opts {
		opt(o)
	}
	monitorServer := monitor.NewServer(ctx, o.monitor...)
	if o.authz == nil {
		o.authz = authorize.NewServer(o.authorize...)
	}
	std := []networkservice.NetworkServiceServer{
		metrics.NewServer(o.name), // first: counts what the elements after it refuse, times the whole hop
		updatepath.NewServer(o.name, o.path...),
		validate.NewServer(),
		begin.NewServer(), // one event per connection at a time; background work re-enters here
		updatetoken.NewServer(gen),
		o.authz,
		metadata.NewServer(),
		metrics.NewConnectionsServer(o.name), // after metadata: background Closes pass here too
		timeout.NewServer(ctx),
		monitorServer,
	}
	return &endpoint{
		NetworkServiceServer:    chain.NewNetworkServiceServer(append(std, o.extra...)...),
		MonitorConnectionServer: monitorServer,
	}
}

type endpoint struct {
	networkservice.NetworkServiceServer
	networkservice.MonitorConnectionServer
}

func (e *endpoint) Register(s *grpc.Server) {
	networkservice.RegisterNetworkServiceServer(s, e)
	networkservice.RegisterMonitorConnectionServer(s, e)
}

// Serve serves e's services on u with grpcserve.Serve (a health service; calls see the values of
// ctx) until ctx is done.
func Serve(ctx context.Context, u *url.URL, e grpcserve.Registrar, opts ...grpc.ServerOption) (<-chan error, error) {
	return grpcserve.Serve(ctx, u, e, opts...)
}
