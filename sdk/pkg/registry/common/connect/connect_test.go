package connect_test

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

	"vwire.dev/sdk/pkg/registry/common/authorize"
	"vwire.dev/sdk/pkg/registry/common/connect"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nse = registry.NetworkServiceEndpoint

// dial returns a connection to a registry served at path, or to nothing when serve is false.
func dial(t *testing.T, serve bool) *grpc.ClientConn {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "registry.sock")
	if serve {
		lis, err := net.Listen("unix", path)
		require.NoError(t, err)
		srv := grpc.NewServer()
		registry.RegisterNetworkServiceEndpointRegistryServer(srv, adapters.NSEServer(next.Chain(updatepath.NewNSE("registry"), authorize.NewNSE(), memory.NewNSE())))
		registry.RegisterNetworkServiceRegistryServer(srv, adapters.NSServer(memory.NewNS()))
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(lis) }()
		t.Cleanup(func() { srv.Stop(); <-done })
	}
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestRegistryOverGRPC(t *testing.T) {
	ctx := context.Background()
	cc := dial(t, true)
	endpoints := connect.NewNSE(cc)
	for _, url := range []string{"tcp://127.0.0.1:5000", "tcp://[::1]:5000", "unix:///run/vw/nse.sock"} {
		got, err := endpoints.Register(ctx, &nse{Name: url, Url: url, NetworkServiceNames: []string{"icmp"}})
		require.NoError(t, err)
		require.Equal(t, url, got.GetUrl())
	}
	var urls []string
	require.NoError(t, endpoints.Find(ctx, &next.Query[*nse]{Record: &nse{NetworkServiceNames: []string{"icmp"}}},
		func(ev *next.Event[*nse]) error { urls = append(urls, ev.Record.GetUrl()); return nil }))
	require.Equal(t, []string{"tcp://127.0.0.1:5000", "tcp://[::1]:5000", "unix:///run/vw/nse.sock"}, urls)
	require.NoError(t, endpoints.Unregister(ctx, &nse{Name: "tcp://[::1]:5000"}))

	services := connect.NewNS(cc)
	got, err := services.Register(ctx, &registry.NetworkService{Name: "icmp", Payload: "IP"})
	require.NoError(t, err)
	require.Equal(t, "IP", got.GetPayload())
	require.NoError(t, services.Unregister(ctx, got))
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	served, absent := connect.NewNSE(dial(t, true)), connect.NewNSE(dial(t, false))
	// Context values do not cross gRPC: the registry knows the registrant by its path ids.
	_, err := served.Register(ctx, &nse{Name: "nse-1", Url: "tcp://[::1]:5000", PathIds: []string{"alice"}})
	require.NoError(t, err)
	stop := status.Error(codes.Unavailable, "the caller's own stream broke")

	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		says []string
	}{
		{"remote answer keeps its code and message", func() error {
			_, err := served.Register(ctx, &nse{Name: "nse-1", Url: "tcp://127.0.0.1:5000", PathIds: []string{"bob"}})
			return err
		}, codes.PermissionDenied, []string{`"nse-1" is registered by "alice"`}},
		{"unreachable Register names the target", func() error {
			_, err := absent.Register(ctx, &nse{Name: "nse-1"})
			return err
		}, codes.Unavailable, []string{"connect: the registry at unix:///tmp/vw", "registry.sock is unreachable"}},
		{"unreachable Find", func() error {
			return absent.Find(ctx, &next.Query[*nse]{Record: &nse{}}, func(*next.Event[*nse]) error { return nil })
		}, codes.Unavailable, []string{"registry.sock is unreachable"}},
		{"unreachable Unregister", func() error {
			return absent.Unregister(ctx, &nse{Name: "nse-1"})
		}, codes.Unavailable, []string{"registry.sock is unreachable"}},
		{"the caller's send error comes back as it was", func() error {
			return served.Find(ctx, &next.Query[*nse]{Record: &nse{}}, func(*next.Event[*nse]) error { return stop })
		}, codes.Unavailable, []string{"the caller's own stream broke"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			for _, s := range tc.says {
				require.Contains(t, err.Error(), s)
			}
		})
	}
	require.Panics(t, func() { connect.NewNS(nil) })
}
