package adapters_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// names answers Find with one event per name and refuses to register "taken".
type names[R next.Record] struct {
	found []R
}

func (n names[R]) Register(ctx context.Context, r R) (R, error) {
	if r.GetName() == "taken" {
		var zero R
		return zero, status.Error(codes.PermissionDenied, "taken")
	}
	return next.Of[R](ctx).Register(ctx, r)
}

func (n names[R]) Find(_ context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	for i, r := range n.found {
		if err := send(&next.Event[R]{Record: r, Deleted: q.Watch && i == len(n.found)-1}); err != nil {
			return err
		}
	}
	return nil
}

func (n names[R]) Unregister(ctx context.Context, r R) error {
	return next.Of[R](ctx).Unregister(ctx, r)
}

func serve(t *testing.T) *grpc.ClientConn {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	lis, err := net.Listen("unix", filepath.Join(dir, "registry.sock"))
	require.NoError(t, err)

	srv := grpc.NewServer()
	registry.RegisterNetworkServiceEndpointRegistryServer(srv, adapters.NSEServer(names[*registry.NetworkServiceEndpoint]{
		found: []*registry.NetworkServiceEndpoint{{Name: "nse-1", Url: "tcp://127.0.0.1:5001"}, {Name: "nse-2", Url: "tcp://[::1]:5002"}},
	}))
	registry.RegisterNetworkServiceRegistryServer(srv, adapters.NSServer(names[*registry.NetworkService]{
		found: []*registry.NetworkService{{Name: "icmp", Payload: "IP"}},
	}))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	cc, err := grpc.NewClient("unix://"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestOverGRPC(t *testing.T) {
	cc := serve(t)
	ctx := context.Background()
	nse := adapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc))
	ns := adapters.NSClient(registry.NewNetworkServiceRegistryClient(cc))

	got, err := nse.Register(ctx, &registry.NetworkServiceEndpoint{Name: "mine"})
	require.NoError(t, err)
	require.Equal(t, "mine", got.GetName())
	_, err = nse.Register(ctx, &registry.NetworkServiceEndpoint{Name: "taken"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "the code crosses the wire")
	require.NoError(t, nse.Unregister(ctx, got))

	var events []*next.Event[*registry.NetworkServiceEndpoint]
	err = nse.Find(ctx, &next.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{}, Watch: true},
		func(ev *next.Event[*registry.NetworkServiceEndpoint]) error {
			events = append(events, ev)
			return nil
		})
	require.NoError(t, err)
	require.Len(t, events, 2)
	require.Equal(t, "nse-1", events[0].Record.GetName())
	require.False(t, events[0].Deleted)
	require.Equal(t, "tcp://[::1]:5002", events[1].Record.GetUrl())
	require.True(t, events[1].Deleted, "the deleted flag crosses the wire")

	var services []string
	err = ns.Find(ctx, &next.Query[*registry.NetworkService]{Record: &registry.NetworkService{}},
		func(ev *next.Event[*registry.NetworkService]) error {
			services = append(services, ev.Record.GetName()+"/"+ev.Record.GetPayload())
			return nil
		})
	require.NoError(t, err)
	require.Equal(t, []string{"icmp/IP"}, services)

	_, err = ns.Register(ctx, &registry.NetworkService{Name: "taken"})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.NoError(t, ns.Unregister(ctx, &registry.NetworkService{Name: "icmp"}))
}

func TestSendErrorStopsFind(t *testing.T) {
	cc := serve(t)
	nse := adapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc))
	stop := status.Error(codes.Canceled, "enough")
	n := 0
	err := nse.Find(context.Background(), &next.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{}},
		func(*next.Event[*registry.NetworkServiceEndpoint]) error { n++; return stop })
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, n)
}
