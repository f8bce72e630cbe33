// Package adapters joins registry chains to gRPC: NSServer and NSEServer serve a chain as NSM's
// registry services; NSClient and NSEClient make a remote registry an element, to end a chain
// with (registry/common/connect uses them).
package adapters

import (
	"context"
	"errors"
	"io"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/registry/core/next"
)

// NSServer serves an NS chain as registry.NetworkServiceRegistryServer.
func NSServer(e next.NS) registry.NetworkServiceRegistryServer {
	return &nsServer{server[*registry.NetworkService]{e}}
}

// NSEServer serves an NSE chain as registry.NetworkServiceEndpointRegistryServer.
func NSEServer(e next.NSE) registry.NetworkServiceEndpointRegistryServer {
	return &nseServer{server[*registry.NetworkServiceEndpoint]{e}}
}

// server holds what both services do alike.
type server[R next.Record] struct {
	chain next.Element[R]
}

func (s *server[R]) Register(ctx context.Context, r R) (R, error) {
	return s.chain.Register(ctx, r)
}

func (s *server[R]) Unregister(ctx context.Context, r R) (*emptypb.Empty, error) {
	if err := s.chain.Unregister(ctx, r); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

type nsServer struct {
	server[*registry.NetworkService]
}

func (s *nsServer) Find(q *registry.NetworkServiceQuery, stream registry.NetworkServiceRegistry_FindServer) error {
	query := &next.Query[*registry.NetworkService]{Record: q.GetNetworkService(), Watch: q.GetWatch()}
	return s.chain.Find(stream.Context(), query, func(ev *next.Event[*registry.NetworkService]) error {
		return stream.Send(&registry.NetworkServiceResponse{NetworkService: ev.Record, Deleted: ev.Deleted})
	})
}

type nseServer struct {
	server[*registry.NetworkServiceEndpoint]
}

func (s *nseServer) Find(q *registry.NetworkServiceEndpointQuery, stream registry.NetworkServiceEndpointRegistry_FindServer) error {
	query := &next.Query[*registry.NetworkServiceEndpoint]{Record: q.GetNetworkServiceEndpoint(), Watch: q.GetWatch()}
	return s.chain.Find(stream.Context(), query, func(ev *next.Event[*registry.NetworkServiceEndpoint]) error {
		return stream.Send(&registry.NetworkServiceEndpointResponse{NetworkServiceEndpoint: ev.Record, Deleted: ev.Deleted})
	})
}

// NSClient returns an element that sends everything to a remote NS registry; it ends a chain.
func NSClient(c registry.NetworkServiceRegistryClient) next.NS {
	return &remote[*registry.NetworkService]{
		register: func(ctx context.Context, ns *registry.NetworkService) (*registry.NetworkService, error) {
			return c.Register(ctx, ns)
		},
		unregister: func(ctx context.Context, ns *registry.NetworkService) error {
			_, err := c.Unregister(ctx, ns)
			return err
		},
		find: func(ctx context.Context, q *next.Query[*registry.NetworkService]) (receiver[*registry.NetworkService], error) {
			stream, err := c.Find(ctx, &registry.NetworkServiceQuery{NetworkService: q.Record, Watch: q.Watch})
			if err != nil {
				return nil, err
			}
			return func() (*next.Event[*registry.NetworkService], error) {
				resp, err := stream.Recv()
				if err != nil {
					return nil, err
				}
				return &next.Event[*registry.NetworkService]{Record: resp.GetNetworkService(), Deleted: resp.GetDeleted()}, nil
			}, nil
		},
	}
}

// NSEClient returns an element that sends everything to a remote NSE registry; it ends a chain.
func NSEClient(c registry.NetworkServiceEndpointRegistryClient) next.NSE {
	return &remote[*registry.NetworkServiceEndpoint]{
		register: func(ctx context.Context, nse *registry.NetworkServiceEndpoint) (*registry.NetworkServiceEndpoint, error) {
			return c.Register(ctx, nse)
		},
		unregister: func(ctx context.Context, nse *registry.NetworkServiceEndpoint) error {
			_, err := c.Unregister(ctx, nse)
			return err
		},
		find: func(ctx context.Context, q *next.Query[*registry.NetworkServiceEndpoint]) (receiver[*registry.NetworkServiceEndpoint], error) {
			stream, err := c.Find(ctx, &registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: q.Record, Watch: q.Watch})
			if err != nil {
				return nil, err
			}
			return func() (*next.Event[*registry.NetworkServiceEndpoint], error) {
				resp, err := stream.Recv()
				if err != nil {
					return nil, err
				}
				return &next.Event[*registry.NetworkServiceEndpoint]{Record: resp.GetNetworkServiceEndpoint(), Deleted: resp.GetDeleted()}, nil
			}, nil
		},
	}
}

// receiver returns the next event of a Find stream, io.EOF at its end.
type receiver[R next.Record] func() (*next.Event[R], error)

type remote[R next.Record] struct {
	register   func(context.Context, R) (R, error)
	unregister func(context.Context, R) error
	find       func(context.Context, *next.Query[R]) (receiver[R], error)
}

func (r *remote[R]) Register(ctx context.Context, rec R) (R, error) { return r.register(ctx, rec) }

func (r *remote[R]) Unregister(ctx context.Context, rec R) error { return r.unregister(ctx, rec) }

func (r *remote[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	// The stream lives as long as this call: cancelling on return releases it on every path.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recv, err := r.find(ctx, q)
	if err != nil {
		return err
	}
	for {
		ev, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := send(ev); err != nil {
			return err
		}
	}
}
