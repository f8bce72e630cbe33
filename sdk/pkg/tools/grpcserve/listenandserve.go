package grpcserve

import (
	"context"
	"net"
	"net/url"

	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/tools/hopurl"
)

// ListenAndServe serves s on u until ctx ends, as NSM's grpcutils.ListenAndServe does, for a
// program that builds its own server (grpc.NewServer, then endpoint.Register(s)): the health
// service is added unless s has one, and when ctx ends s stops and a unix socket file is removed.
// A URL that cannot be served is the channel's one error (hopurl: it names the URL and why),
// before it closes; otherwise the channel is Serve's.
//
// Unlike Serve, s keeps the options it was built with: calls do not see the values of ctx;
// unless s was built with grpc.WaitForHandlers(true), handlers of calls in flight at the stop may
// still run after the channel closed; and s continues its callers' traces only if it was built
// with telemetry.ServerOptions() (NSM's tracing.WithTracing()), called after telemetry was set
// up (envconfig.Command, or telemetry.Setup): gRPC takes a stats handler only when a server is
// built, so ListenAndServe cannot add one.
func ListenAndServe(ctx context.Context, u *url.URL, s *grpc.Server) <-chan error {
	lis, err := hopurl.Listen(u)
	if err != nil {
		errs := make(chan error, 1)
		errs <- err
		close(errs)
		return errs
	}
	return serve(ctx, s, []*url.URL{u}, []net.Listener{lis})
}
