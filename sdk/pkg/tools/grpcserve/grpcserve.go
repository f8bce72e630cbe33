// Package grpcserve serves a component's gRPC services on a next-hop URL (unix:///path or
// tcp://host:port), or on several at once (ServeAll): an endpoint, a forwarder, a Network Service Manager, a registry, in a
// program (cmd-*) or in a test. It is the one place that listens, adds the standard health
// service and stops, so that every component starts and ends the same way.
//
// Guarantees:
//   - Serve and ServeAll listen through sdk/pkg/tools/hopurl before they return: a URL that
//     cannot be served (a bad form, a socket another process answers on, a port in use) is their
//     error, naming the URL, and nothing is left running or listening.
//   - Every call sees the values of the serving context (its clock, its logger) where the call's
//     own context has none, as the elements of an in-process chain would; the call keeps its own
//     deadline and cancellation.
//   - The health service (grpc.health.v1.Health, service "") says SERVING while the server
//     serves. When the serving context ends it says NOT_SERVING (to the watchers it reaches before
//     their stream closes) and the server stops, closing every call and connection at once; a
//     unix socket file is removed.
//   - Servers are tuned for a mesh's calls: calls run on goroutines the server keeps,
//     flow-control windows are fixed, and messages are bounded by validate.MaxMessageBytes
//     (1 MiB, not gRPC's 4 MB; see tuned); options given to Serve replace these.
//   - A Registrar that needs options of its server (NeedsOptions: the nsmgr's stats handler,
//     which learns when a caller's transport ends) gets them, before the options given to Serve.
//   - While traces are exported (sdk/pkg/tools/telemetry), every server Serve and ServeAll build
//     continues its callers' traces (otelgrpc's stats handler, telemetry.ServerOptions);
//     otherwise it has none. ListenAndServe's server has the options its program gave it.
//   - The returned channel gets the error that ended serving, if any (the listener failed), and
//     is closed once serving has ended: draining it waits for the end, which is also the end of
//     every call (the handlers of calls in flight have returned, their contexts cancelled), so a
//     program may close what its handlers use once it has drained the channel.
//
// ListenAndServe is Serve for a *grpc.Server the caller built, as NSM's programs build theirs.
//
// Registered runs the rest of a registered component's life (an endpoint, a forwarder): it is
// unregistered before it stops answering. sdk/pkg/registry/register's Serve, which every cmd that
// registers uses, is built on it.
package grpcserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/hopurl"
	"vwire.dev/sdk/pkg/tools/telemetry"
)

// Registrar adds services to a gRPC server: an endpoint, a Network Service Manager, a registry.
type Registrar interface {
	Register(s *grpc.Server)
}

// RegistrarFunc is a function that is a Registrar.
type RegistrarFunc func(s *grpc.Server)

// Register calls f.
func (f RegistrarFunc) Register(s *grpc.Server) { f(s) }

// NeedsOptions is a Registrar whose services need options of the server that serves them.
type NeedsOptions interface {
	Registrar
	ServerOptions() []grpc.ServerOption
}

// Serve serves r's services and the health service on u until ctx ends; opts configure the
// server (credentials, interceptors, run after the one that adds ctx's values).
func Serve(ctx context.Context, u *url.URL, r Registrar, opts ...grpc.ServerOption) (<-chan error, error) {
	return ServeAll(ctx, []*url.URL{u}, r, opts...)
}

// ServeAll is Serve on every URL of us at once (a node's socket and its tcp address): one
// server, so one set of services and one health status, with a listener per URL. A URL that
// cannot be served closes those listened on already, and is the error. Serving ends on all of
// them together: when ctx ends, or when one listener fails.
func ServeAll(ctx context.Context, us []*url.URL, r Registrar, opts ...grpc.ServerOption) (<-chan error, error) {
	if len(us) == 0 {
		return nil, errors.New("grpcserve: no URL to serve on")
	}
	var listeners []net.Listener
	for _, u := range us {
		lis, err := hopurl.Listen(u)
		if err != nil {
			for _, l := range listeners {
				_ = l.Close()
			}
			return nil, err
		}
		listeners = append(listeners, lis)
	}
	all := slices.Concat(withValuesOf(ctx), tuned, telemetry.ServerOptions()) // the callers' traces go on, when exported
	if n, ok := r.(NeedsOptions); ok {
		all = append(all, n.ServerOptions()...)
	}
	srv := grpc.NewServer(append(all, opts...)...)
	r.Register(srv)
	return serve(ctx, srv, us, listeners), nil
}

// serve serves srv on listeners (the listeners of us) until ctx ends or one of them fails, with
// the health service unless srv has one already.
func serve(ctx context.Context, srv *grpc.Server, us []*url.URL, listeners []net.Listener) <-chan error {
	status := health.NewServer()
	if _, ok := srv.GetServiceInfo()[grpc_health_v1.Health_ServiceDesc.ServiceName]; !ok {
		grpc_health_v1.RegisterHealthServer(srv, status)
	}
	stop := context.AfterFunc(ctx, func() {
		status.Shutdown() // NOT_SERVING, for the watchers that hear it before Stop ends their stream
		srv.Stop()
	})
	errs := make(chan error, len(listeners))
	var serving sync.WaitGroup
	for i, lis := range listeners {
		serving.Go(func() {
			err := srv.Serve(lis)
			// Serve returned on its own when the listener failed: end the calls too. With
			// WaitForHandlers (tuned), Stop returns once every call has returned.
			srv.Stop()
			// ErrServerStopped: ctx ended, or another listener failed, before Serve began.
			if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errs <- fmt.Errorf("grpcserve: serve on %s: %w", us[i], err)
			}
		})
	}
	go func() {
		serving.Wait()
		stop()
		close(errs)
	}()
	return errs
}

// tuned are the server options every component gets (opts given to Serve come after and may
// replace them):
//   - callers on unix sockets may pass files beside their calls (fdpass.Credentials: a client's
//     network namespace, an endpoint's socket); TLS given to Serve should wrap the same way.
//   - calls run on 16 goroutines the server keeps, not a fresh one per call: a call through a
//     component's chains needs tens of KB of stack, which a fresh goroutine grows, copying it, on
//     every call, where a kept one has grown it already. Long-lived streams (monitor subscribers,
//     registry watches) hold a goroutine each; when all are busy a call gets a fresh one.
//   - HTTP/2 flow-control windows are fixed at 1 MiB instead of estimated: the estimate pings the
//     peer after nearly every message read, as many packets again as the mesh's own few-KB
//     messages.
//   - a message received or sent is at most validate.MaxMessageBytes: a bigger one is refused
//     by gRPC with ResourceExhausted before it is decoded, and the server and the caller's
//     other calls and connections go on. The mesh's messages are a few KB; gRPC's default of
//     4 MB let a caller make a component hold and check thousands of entries per call.
var tuned = []grpc.ServerOption{
	grpc.WaitForHandlers(true), // stopping waits for the calls in flight (their contexts cancelled)
	grpc.Creds(fdpass.Credentials(nil)),
	grpc.NumStreamWorkers(16),
	grpc.StaticStreamWindowSize(1 << 20),
	grpc.StaticConnWindowSize(1 << 20),
	grpc.MaxRecvMsgSize(validate.MaxMessageBytes),
	grpc.MaxSendMsgSize(validate.MaxMessageBytes),
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
