package grpcserve_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"

	"vwire.dev/sdk/pkg/tools/grpcserve"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// socket returns a unix URL in a short temporary directory (Linux caps socket paths).
func socket(t *testing.T) *url.URL {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return &url.URL{Scheme: "unix", Path: filepath.Join(dir, "s.sock")}
}

func dial(t *testing.T, u *url.URL) *grpc.ClientConn {
	cc, err := grpc.NewClient("unix://"+u.Path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

var nothing = grpcserve.RegistrarFunc(func(*grpc.Server) {})

func TestHealthSaysNotServingThenStops(t *testing.T) {
	u := socket(t)
	ctx, cancel := context.WithCancel(context.Background())
	errs, err := grpcserve.Serve(ctx, u, nothing)
	require.NoError(t, err)

	watch, err := grpc_health_v1.NewHealthClient(dial(t, u)).Watch(context.Background(), &grpc_health_v1.HealthCheckRequest{})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, grpc_health_v1.HealthCheckResponse_SERVING, first.GetStatus())

	cancel()
	for err := range errs {
		t.Error(err)
	}
	for { // NOT_SERVING if it comes before the stream ends with the server, nothing else
		resp, err := watch.Recv()
		if err != nil {
			break
		}
		require.Equal(t, grpc_health_v1.HealthCheckResponse_NOT_SERVING, resp.GetStatus())
	}
	_, err = os.Stat(u.Path)
	require.ErrorIs(t, err, os.ErrNotExist, "the socket file is removed")
}

func TestStoppedBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs, err := grpcserve.Serve(ctx, socket(t), nothing)
	require.NoError(t, err)
	for err := range errs {
		t.Error(err, "a server stopped before it served did not fail")
	}
}

func TestURLsThatCannotBeServed(t *testing.T) {
	busy := socket(t)
	lis, err := net.Listen("unix", busy.Path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lis.Close() })
	file := filepath.Join(filepath.Dir(busy.Path), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))

	for _, tc := range []struct {
		name string
		u    *url.URL
		want string
	}{
		{"another scheme", &url.URL{Scheme: "http", Host: "x:80"}, `scheme "http" is not supported`},
		{"a file that is no socket", &url.URL{Scheme: "unix", Path: file}, "hopurl: listen on unix://" + file + ": " + file + " exists and is not a socket"},
		{"a socket another process serves", busy, "hopurl: listen on " + busy.String() + ": another process is serving on this socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := grpcserve.Serve(context.Background(), tc.u, nothing)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestServeAll: one server answers on every URL, and ends on all of them with its context; a URL
// that cannot be served leaves none of the others listening.
func TestServeAll(t *testing.T) {
	a, b := socket(t), socket(t)
	ctx, cancel := context.WithCancel(context.Background())
	errs, err := grpcserve.ServeAll(ctx, []*url.URL{a, b}, nothing)
	require.NoError(t, err)
	for _, u := range []*url.URL{a, b} {
		resp, err := grpc_health_v1.NewHealthClient(dial(t, u)).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
		require.NoError(t, err)
		require.Equal(t, grpc_health_v1.HealthCheckResponse_SERVING, resp.GetStatus())
	}
	cancel()
	for err := range errs {
		t.Error(err)
	}
	for _, u := range []*url.URL{a, b} {
		_, err := os.Stat(u.Path)
		require.ErrorIs(t, err, os.ErrNotExist, "the socket file is removed")
	}

	busy := socket(t)
	lis, err := net.Listen("unix", busy.Path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lis.Close() })
	_, err = grpcserve.ServeAll(context.Background(), []*url.URL{a, busy}, nothing)
	require.ErrorContains(t, err, "another process is serving on this socket")
	_, err = os.Stat(a.Path)
	require.ErrorIs(t, err, os.ErrNotExist, "the first URL is not left listening")
	_, err = grpcserve.ServeAll(context.Background(), nil, nothing)
	require.EqualError(t, err, "grpcserve: no URL to serve on")
}

// valueKey is where the serving context keeps a value for the calls.
type valueKey struct{}

// echo answers each call with the value it finds in its context: the Request's connection ID,
// the monitor stream's one event's connection ID.
type echo struct {
	networkservice.NetworkServiceServer
}

func (echo) Request(ctx context.Context, _ *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	s, _ := ctx.Value(valueKey{}).(string)
	return &networkservice.Connection{Id: s}, nil
}

func (echo) MonitorConnections(_ *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	s, _ := srv.Context().Value(valueKey{}).(string)
	return srv.Send(&networkservice.ConnectionEvent{Connections: map[string]*networkservice.Connection{s: {Id: s}}})
}

func TestCallsSeeTheServingContextsValues(t *testing.T) {
	u := socket(t)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), valueKey{}, "from the server"))
	errs, err := grpcserve.Serve(ctx, u, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		networkservice.RegisterNetworkServiceServer(s, echo{})
		networkservice.RegisterMonitorConnectionServer(s, echo{})
	}))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	cc := dial(t, u)

	conn, err := networkservice.NewNetworkServiceClient(cc).Request(context.Background(), &networkservice.NetworkServiceRequest{})
	require.NoError(t, err)
	require.Equal(t, "from the server", conn.GetId(), "a unary call")

	stream, err := networkservice.NewMonitorConnectionClient(cc).MonitorConnections(context.Background(), &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	event, err := stream.Recv()
	require.NoError(t, err)
	require.Contains(t, event.GetConnections(), "from the server", "a stream")
}

// needsOptions serves echo and asks for an interceptor that answers every unary call itself.
type needsOptions struct{}

func (needsOptions) Register(s *grpc.Server) { networkservice.RegisterNetworkServiceServer(s, echo{}) }

func (needsOptions) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
		return &networkservice.Connection{Id: "from the registrar's option"}, nil
	})}
}

// TestRegistrarGetsItsOptions: a Registrar that needs options of its server (NeedsOptions, the
// nsmgr's stats handler) is served with them.
func TestRegistrarGetsItsOptions(t *testing.T) {
	u := socket(t)
	ctx, cancel := context.WithCancel(context.Background())
	errs, err := grpcserve.Serve(ctx, u, needsOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	conn, err := networkservice.NewNetworkServiceClient(dial(t, u)).Request(context.Background(), &networkservice.NetworkServiceRequest{})
	require.NoError(t, err)
	require.Equal(t, "from the registrar's option", conn.GetId())
}
