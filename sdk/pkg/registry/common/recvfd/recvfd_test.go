package recvfd_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/registry/common/connect"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/recvfd"
	"vwire.dev/sdk/pkg/registry/common/sendfd"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/grpcserve"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nse = registry.NetworkServiceEndpoint

// serve serves u with r's services until the test ends.
func serve(t *testing.T, u *url.URL, r grpcserve.Registrar) {
	ctx, cancel := context.WithCancel(context.Background())
	errs, err := grpcserve.Serve(ctx, u, r)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for range errs {
		}
	})
}

// TestSocketsTravelFromRegistrantToFinder: an endpoint registers with its socket passed; the
// registry keeps it, refuses a registrant naming a socket it did not pass, and gives it to a
// finder, which reaches the endpoint through it after the socket's path is gone. Unregister lets
// go of it.
func TestSocketsTravelFromRegistrantToFinder(t *testing.T) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	endpoint := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
	serve(t, endpoint, grpcserve.RegistrarFunc(func(*grpc.Server) {})) // answers health checks
	registryURL := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "registry.sock")}
	kept := fdpass.NewSockets()
	serve(t, registryURL, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		registry.RegisterNetworkServiceEndpointRegistryServer(s, adapters.NSEServer(next.Chain(recvfd.NewServer(kept), memory.NewNSE())))
	}))
	cc, err := regclient.Dial(registryURL)
	require.NoError(t, err)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inode, err := fdpass.PathURL(endpoint.Path)
	require.NoError(t, err)

	_, err = connect.NewNSE(cc).Register(ctx, &nse{Name: "thief", Url: inode})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	registrant := next.Chain(sendfd.NewNSE(), connect.NewNSE(cc))
	got, err := registrant.Register(ctx, &nse{Name: "nse", Url: endpoint.String()})
	require.NoError(t, err)
	require.Equal(t, endpoint.String(), got.GetUrl(), "the registrant gets its own URL back")
	require.NotNil(t, kept.Get(inode), "the registry keeps the socket")
	require.NoError(t, os.Remove(endpoint.Path))

	found := fdpass.NewSockets()
	var results []*nse
	err = next.Chain(recvfd.NewClient(found), connect.NewNSE(cc)).Find(ctx, &next.Query[*nse]{Record: &nse{Name: "nse"}},
		func(ev *next.Event[*nse]) error { results = append(results, ev.Record); return nil })
	require.NoError(t, err)
	require.Len(t, results, 1)
	require.Equal(t, inode, results[0].GetUrl(), "finders see the socket's inode URL")
	conn, err := grpc.NewClient("passthrough:///"+inode, grpc.WithTransportCredentials(insecure.NewCredentials()), found.Dialer(inode))
	require.NoError(t, err)
	defer conn.Close()
	health, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	require.NoError(t, err, "the finder reaches the endpoint through the socket it received")
	require.Equal(t, grpc_health_v1.HealthCheckResponse_SERVING, health.GetStatus())

	require.NoError(t, registrant.Unregister(ctx, &nse{Name: "nse", Url: endpoint.String()}))
	require.Nil(t, kept.Get(inode), "Unregister lets go of the socket")
}

// held passes Register on and then, for a record naming a passed socket, waits until release is
// closed: the registry has taken the record (its watchers are told) but the Register has not
// returned yet.
type held struct{ release chan struct{} }

func (h *held) Register(ctx context.Context, r *nse) (*nse, error) {
	got, err := next.Of[*nse](ctx).Register(ctx, r)
	if fdpass.IsURL(r.GetUrl()) {
		<-h.release
	}
	return got, err
}

func (h *held) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

func (h *held) Unregister(ctx context.Context, r *nse) error {
	return next.Of[*nse](ctx).Unregister(ctx, r)
}

// TestAWatcherGetsTheSocketWithTheRegistration: a forwarder already watching (as its query
// cache does while connections to an endpoint of that name come and go) is sent the record as
// soon as the registry takes it, before the Register returns; the socket must go with it, or the
// forwarder can never dial the endpoint (seen when a spawned endpoint came back under its name).
func TestAWatcherGetsTheSocketWithTheRegistration(t *testing.T) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	endpoint := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
	serve(t, endpoint, grpcserve.RegistrarFunc(func(*grpc.Server) {}))
	registryURL := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "registry.sock")}
	gate := &held{release: make(chan struct{})}
	serve(t, registryURL, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		registry.RegisterNetworkServiceEndpointRegistryServer(s, adapters.NSEServer(next.Chain(recvfd.NewServer(fdpass.NewSockets()), gate, memory.NewNSE())))
	}))
	cc, err := regclient.Dial(registryURL)
	require.NoError(t, err)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inode, err := fdpass.PathURL(endpoint.Path)
	require.NoError(t, err)

	found := fdpass.NewSockets()
	watching, stopWatching := context.WithCancel(ctx)
	seen := make(chan string, 1)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- next.Chain(recvfd.NewClient(found), connect.NewNSE(cc)).Find(watching,
			&next.Query[*nse]{Record: &nse{Name: "nse"}, Watch: true},
			func(ev *next.Event[*nse]) error { seen <- ev.Record.GetUrl(); return nil })
	}()
	// An endpoint of the name that had no socket; once the watcher saw it, the watch stands.
	_, err = connect.NewNSE(cc).Register(ctx, &nse{Name: "nse", Url: "tcp://10.0.0.1:5003"})
	require.NoError(t, err)
	require.Equal(t, "tcp://10.0.0.1:5003", <-seen)

	registered := make(chan error, 1)
	go func() {
		_, err := next.Chain(sendfd.NewNSE(), connect.NewNSE(cc)).Register(ctx, &nse{Name: "nse", Url: endpoint.String()})
		registered <- err
	}()
	require.Equal(t, inode, <-seen, "the watcher is told while the Register is still under way")
	require.NotNil(t, found.Get(inode), "the socket came with the record")
	close(gate.release)
	require.NoError(t, <-registered)
	stopWatching()
	<-watchDone
}
