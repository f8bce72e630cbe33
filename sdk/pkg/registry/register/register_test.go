package register_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/registry/register"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const service = "svc"

// record is the endpoint the tests register.
func record(name string) *registry.NetworkServiceEndpoint {
	return &registry.NetworkServiceEndpoint{Name: name, NetworkServiceNames: []string{service}}
}

// options are those of a program of identity id in mesh: its credentials and tokens.
func options(id *sandbox.Identity, more ...register.Option) []register.Option {
	return append([]register.Option{
		register.WithDialOptions(append(id.DialOptions(), regclient.WithTokens(id.Tokens))...),
		register.WithServerOptions(id.ServerOptions()...),
		register.WithServices(""),
	}, more...)
}

// build makes the standard endpoint of identity id.
func build(id *sandbox.Identity, name string) register.Builder {
	return func(serving context.Context, _ grpc.ClientConnInterface) (grpcserve.Registrar, error) {
		return endpoint.NewServer(serving, id.Tokens, endpoint.WithName(name),
			endpoint.WithAuthorizeOptions(authorize.WithIdentity(id.Source))), nil
	}
}

// socket returns a unix URL in a short temporary directory (Linux caps socket paths).
func socket(t *testing.T) *url.URL {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
}

// request asks the node's nsmgr for the service once, and names the endpoint that answered.
func request(ctx context.Context, nsc networkservice.NetworkServiceClient) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := nsc.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{NetworkService: service}})
	if err != nil {
		return "", err
	}
	_, err = nsc.Close(ctx, conn)
	return conn.GetNetworkServiceEndpointName(), err
}

// TestServe: an endpoint served with Serve is registered (its service first) and answers through
// the nsmgr, is registered again when the nsmgr restarts, and at the stop is unregistered, then
// stops serving, its socket removed.
func TestServe(t *testing.T) {
	mesh := sandbox.New(t, 1)
	node := mesh.Nodes[0]
	id := mesh.NewIdentity("nse-1")
	listenOn := socket(t)
	ctx, stop := context.WithCancel(mesh.Context())
	defer stop()
	served := make(chan error, 1)
	go func() {
		served <- register.Serve(ctx, listenOn, node.NSMgr.URL, record("nse-1"), build(id, "nse-1"), options(id)...)
	}()

	nsc := node.NewClient("nsc")
	require.Eventually(t, func() bool { name, err := request(ctx, nsc); return err == nil && name == "nse-1" },
		10*time.Second, 10*time.Millisecond, "registered and served")
	found := mesh.FindEndpoints(ctx, "nse-1")
	require.Len(t, found, 1)
	require.Equal(t, []string{service}, found[0].GetNetworkServiceNames())
	services, err := registry.NewNetworkServiceRegistryClient(mesh.Dial(mesh.Registry.URL, "test")).Find(ctx,
		&registry.NetworkServiceQuery{NetworkService: &registry.NetworkService{Name: service}})
	require.NoError(t, err)
	ns, err := services.Recv()
	require.NoError(t, err)
	require.Equal(t, service, ns.GetNetworkService().GetName(), "its service is registered first")

	// An nsmgr that restarted has forgotten the endpoint and the socket it passed: the endpoint
	// answers through it again only once it registered again.
	node.NSMgr.Restart()
	require.Eventually(t, func() bool { name, err := request(ctx, nsc); return err == nil && name == "nse-1" },
		10*time.Second, 10*time.Millisecond, "registered again at the restarted nsmgr")

	stop()
	require.NoError(t, <-served)
	require.Empty(t, mesh.FindEndpoints(mesh.Context(), "nse-1"), "unregistered at the stop")
	_, err = os.Stat(listenOn.Path)
	require.ErrorIs(t, err, os.ErrNotExist, "serving has ended when Serve returns")
}

// TestRegistersAgainAfterTheRegistryRestarts: a registry that restarted has lost every record;
// the endpoint is in it again without waiting for a refresh.
func TestRegistersAgainAfterTheRegistryRestarts(t *testing.T) {
	mesh := sandbox.New(t, 1)
	id := mesh.NewIdentity("nse-1")
	nse := record("nse-1")
	nse.Url = "tcp://127.0.0.1:5001" // nobody serves there: the registry does not dial it
	r, err := register.Start(mesh.Context(), mesh.Nodes[0].NSMgr.URL, nse, options(id)...)
	require.NoError(t, err)
	mesh.Registry.Restart()
	require.Eventually(t, func() bool { return len(mesh.FindEndpoints(mesh.Context(), "nse-1")) == 1 },
		10*time.Second, 10*time.Millisecond, "registered again at the restarted registry")
	require.NoError(t, r.Stop())
	require.Empty(t, mesh.FindEndpoints(mesh.Context(), "nse-1"))
}

// TestRefreshedBeforeItExpires: the registration outlives its lifetime, refreshed on the
// mesh's clock.
func TestRefreshedBeforeItExpires(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_700_000_000, 0))
	mesh := sandbox.New(t, 1, sandbox.WithClock(fake), sandbox.Insecure()) // TLS checks certificates on the real clock
	id := mesh.NewIdentity("nse-1")
	nse := record("nse-1")
	nse.Url = "tcp://127.0.0.1:5001"
	r, err := register.Start(mesh.Context(), mesh.Nodes[0].NSMgr.URL, nse, options(id)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Stop()) })
	expires := r.Record().GetExpirationTime().AsTime()
	require.WithinDuration(t, fake.Now().Add(sandbox.RegistrationLifetime), expires, 0)

	// Step by step, as a program's time passes: each step's timers (refresh, expiry) have fired
	// and their calls ended before the next.
	for fake.Now().Before(expires.Add(sandbox.RegistrationLifetime / 10)) {
		fake.Advance(sandbox.RegistrationLifetime / 20)
		require.Eventually(t, func() bool { return len(mesh.FindEndpoints(mesh.Context(), "nse-1")) == 1 },
			10*time.Second, 10*time.Millisecond, "registered at %s", fake.Now())
	}
	found := mesh.FindEndpoints(mesh.Context(), "nse-1")
	require.True(t, found[0].GetExpirationTime().AsTime().After(fake.Now()), "refreshed")
}

// TestNoAnswer: with nothing at NSM_CONNECT_TO, the first registration gives up after the
// timeout with an error that names the setting and what to check, and leaves nothing running.
func TestNoAnswer(t *testing.T) {
	nowhere := socket(t)
	for _, tc := range []struct {
		name string
		opts []register.Option
		want string
	}{
		{"the endpoint", nil, "register at " + nowhere.String() + ": no answer within NSM_REGISTER_TIMEOUT=200ms; is the nsmgr or registry running there? (Unavailable: "},
		{"a service first", []register.Option{register.WithServices(payload.IP)},
			"register network service svc at " + nowhere.String() + ": no answer within NSM_REGISTER_TIMEOUT=200ms; is the nsmgr or registry running there? (Unavailable: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]register.Option{register.WithTimeout(200*time.Millisecond, "NSM_REGISTER_TIMEOUT")}, tc.opts...)
			_, err := register.Start(context.Background(), nowhere, record("nse-1"), opts...)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, codes.Unavailable, status.Code(err), "the code is kept")

			err = register.Serve(context.Background(), nil, nowhere, record("nse-1"), func(context.Context, grpc.ClientConnInterface) (grpcserve.Registrar, error) {
				return grpcserve.RegistrarFunc(func(*grpc.Server) {}), nil
			}, opts...)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestStopWhenTheNsmgrIsGone: the unregistration at the stop waits at most the timeout for an
// nsmgr that does not answer, and says so.
func TestStopWhenTheNsmgrIsGone(t *testing.T) {
	mesh := sandbox.New(t, 1)
	id := mesh.NewIdentity("nse-1")
	nse := record("nse-1")
	nse.Url = "tcp://127.0.0.1:5001"
	nsmgr := mesh.Nodes[0].NSMgr
	r, err := register.Start(mesh.Context(), nsmgr.URL, nse, options(id, register.WithTimeout(300*time.Millisecond, ""))...)
	require.NoError(t, err)
	nsmgr.Kill()
	err = r.Stop()
	require.ErrorContains(t, err, "unregister at "+nsmgr.URL.String()+": ")
	require.True(t, status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded, "%v", err)
}

// TestStoppedWhileRegistering: a program stopped before its registration was answered leaves
// nothing registered, and that is no failure.
func TestStoppedWhileRegistering(t *testing.T) {
	mesh := sandbox.New(t, 1)
	id := mesh.NewIdentity("nse-1")
	ctx, stop := context.WithCancel(mesh.Context())
	err := register.Serve(ctx, socket(t), mesh.Nodes[0].NSMgr.URL, record("nse-1"),
		func(serving context.Context, cc grpc.ClientConnInterface) (grpcserve.Registrar, error) {
			stop() // the signal comes before the registration
			return build(id, "nse-1")(serving, cc)
		}, options(id)...)
	require.NoError(t, err)
	require.Empty(t, mesh.FindEndpoints(mesh.Context(), "nse-1"))
}
