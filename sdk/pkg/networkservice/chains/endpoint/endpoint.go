// Package endpoint is the chain every Network Service Endpoint starts from: it keeps the path and
// tokens, authorizes, keeps per-connection state, closes connections whose client stopped
// refreshing, and tells monitors about every connection. An NSE author appends the elements that
// make their service (addresses, DNS, interfaces) with WithAdditionalFunctionality, and serves
// the result with Serve.
package endpoint

import (
	"context"
	"fmt"
	"net/url"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"

	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/common/timeout"
	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/common/updatetoken"
	"vwire.dev/sdk/pkg/networkservice/common/validate"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/tools/hopurl"
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
	extra     []networkservice.NetworkServiceServer
}

// WithName names the endpoint: its path segment and the issuer of its tokens.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithAuthorizeOptions replaces the default policies (valid, unexpired tokens; a consistent path).
func WithAuthorizeOptions(opts ...authorize.Option) Option {
	return func(o *options) { o.authorize = opts }
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
	monitorServer := monitor.NewServer(ctx)
	std := []networkservice.NetworkServiceServer{
		updatepath.NewServer(o.name),
		validate.NewServer(),
		begin.NewServer(), // one event per connection at a time; background work re-enters here
		updatetoken.NewServer(gen),
		authorize.NewServer(o.authorize...),
		metadata.NewServer(),
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

// Registrar adds services to a gRPC server: an Endpoint, a Network Service Manager, a registry.
type Registrar interface {
	Register(s *grpc.Server)
}

// RegistrarFunc is a function that is a Registrar.
type RegistrarFunc func(s *grpc.Server)

// Register calls f.
func (f RegistrarFunc) Register(s *grpc.Server) { f(s) }

// Serve serves r's services on u (unix:///path or tcp://host:port) with a gRPC health service,
// until ctx is done. Every call sees the values of ctx (its clock, its logger) where the call's own
// context has none, as the elements of an in-process chain would. The returned channel gets the
// error that stopped serving, if any, and is closed when serving ends.
func Serve(ctx context.Context, u *url.URL, r Registrar, opts ...grpc.ServerOption) (<-chan error, error) {
	lis, err := hopurl.Listen(u)
	if err != nil {
		return nil, fmt.Errorf("endpoint: listen on %s: %w", u, err)
	}
	srv := grpc.NewServer(append(withValuesOf(ctx), opts...)...)
	r.Register(srv)
	grpc_health_v1.RegisterHealthServer(srv, health.NewServer())
	errs := make(chan error, 1)
	stop := context.AfterFunc(ctx, srv.Stop)
	go func() {
		defer close(errs)
		defer stop()
		err := srv.Serve(lis)
		// Serve returns once the listener is closed; Stop returns once every connection is,
		// also when the listener failed on its own and nothing called Stop yet.
		srv.Stop()
		if err != nil {
			errs <- fmt.Errorf("endpoint: serve on %s: %w", u, err)
		}
	}()
	return errs, nil
}

// withValuesOf returns interceptors that give every call the values of ctx under its own: a
// gRPC handler's context starts without them, and elements read their clock and logger there.
func withValuesOf(ctx context.Context) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(call context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(valuesOf{call, ctx}, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, stream{ss, valuesOf{ss.Context(), ctx}})
		}),
	}
}

// valuesOf is the call's context (its deadline, cancellation and values) falling back to the
// values of the serving context.
type valuesOf struct {
	context.Context
	serving context.Context
}

func (v valuesOf) Value(key any) any {
	if value := v.Context.Value(key); value != nil {
		return value
	}
	return v.serving.Value(key)
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s stream) Context() context.Context { return s.ctx }
