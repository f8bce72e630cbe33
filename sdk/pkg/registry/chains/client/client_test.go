package client_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/registry/chains/registryserver"
	"vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve starts a fresh registry on path and returns it and how to stop it.
func serve(t *testing.T, path string) (*registryserver.Server, func()) {
	lis, err := net.Listen("unix", path)
	require.NoError(t, err)
	reg := registryserver.New()
	srv := grpc.NewServer()
	reg.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	return reg, srv.Stop
}

// stored returns the names of the records e holds; all is a record with nothing set.
func stored[R next.Record](t *testing.T, e next.Element[R], all R) []string {
	var out []string
	require.NoError(t, e.Find(context.Background(), &next.Query[R]{Record: all}, func(ev *next.Event[R]) error {
		out = append(out, ev.Record.GetName())
		return nil
	}))
	return out
}

func names(t *testing.T, reg *registryserver.Server) []string {
	return stored(t, reg.NSE, &registry.NetworkServiceEndpoint{})
}

// socketPath returns a socket path in a short temporary directory (Linux caps socket paths).
func socketPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "registry.sock")
}

// dial returns a connection to the socket at path, made by client.Dial.
func dial(t *testing.T, path string) *grpc.ClientConn {
	cc, err := client.Dial(&url.URL{Scheme: "unix", Path: path})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestRegisteredAgainAfterRegistryRestart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		register func(context.Context, grpc.ClientConnInterface) (pathIDs []string, unregister func(context.Context) error, err error)
		stored   func(*testing.T, *registryserver.Server) []string
	}{
		{"endpoint", func(ctx context.Context, cc grpc.ClientConnInterface) ([]string, func(context.Context) error, error) {
			nse := &registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5001"}
			got, unregister, err := client.Register(ctx, cc, nse)
			return got.GetPathIds(), unregister, err
		}, names},
		{"network service", func(ctx context.Context, cc grpc.ClientConnInterface) ([]string, func(context.Context) error, error) {
			got, unregister, err := client.RegisterNS(ctx, cc, &registry.NetworkService{Name: "nse-1", Payload: "ETHERNET"})
			return got.GetPathIds(), unregister, err
		}, func(t *testing.T, reg *registryserver.Server) []string {
			return stored(t, reg.NS, &registry.NetworkService{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := socketPath(t)
			reg, stop := serve(t, path)
			cc := dial(t, path)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)

			pathIDs, unregister, err := tc.register(ctx, cc)
			require.NoError(t, err)
			require.Equal(t, "nse-1", pathIDs[0], "the registrant's id comes first")
			require.Equal(t, []string{"nse-1"}, tc.stored(t, reg))

			stop()
			reg, stop = serve(t, path)
			t.Cleanup(stop)
			require.Eventually(t, func() bool { return len(tc.stored(t, reg)) == 1 }, 10*time.Second, 5*time.Millisecond,
				"registered again at the restarted registry without waiting for a refresh")

			require.NoError(t, unregister(ctx))
			require.Empty(t, tc.stored(t, reg))
		})
	}
}

// failOnce is a connection that calls after once, in the caller's goroutine, when the first
// call over it failed.
type failOnce struct {
	*grpc.ClientConn
	once  sync.Once
	after func()
}

func (f *failOnce) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	err := f.ClientConn.Invoke(ctx, method, args, reply, opts...)
	if err != nil {
		f.once.Do(f.after)
	}
	return err
}

func TestFirstRegistrationWaitsForTheRegistryWithinTheTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	for _, tc := range []struct {
		name      string
		nse       *registry.NetworkServiceEndpoint
		afterFail func(ctx context.CancelFunc, startRegistry func()) // after the first failed attempt
		wantCode  codes.Code                                         // codes.OK: registered
		wantMsg   []string                                           // in the error; "$sock" is the registry's URL
		wantLong  bool                                               // took the whole timeout
	}{
		{name: "registry starts late", afterFail: func(_ context.CancelFunc, start func()) { start() }, wantCode: codes.OK},
		{name: "registry unreachable", afterFail: func(context.CancelFunc, func()) {}, wantCode: codes.Unavailable,
			wantMsg: []string{"client: register nse-1: no answer within 500ms: ", "the registry at $sock is unreachable"}, wantLong: true},
		{name: "caller gives up", afterFail: func(cancel context.CancelFunc, _ func()) { cancel() }, wantCode: codes.Canceled},
		{name: "refused at once", nse: &registry.NetworkServiceEndpoint{Name: "nse 1"}, afterFail: func(context.CancelFunc, func()) {},
			wantCode: codes.InvalidArgument, wantMsg: []string{`"nse 1"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := socketPath(t)
			raw := dial(t, path)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			var reg *registryserver.Server
			start := func() {
				var stop func()
				reg, stop = serve(t, path)
				t.Cleanup(stop)
			}
			if tc.nse != nil { // a registry that answers, and refuses
				start()
			}
			cc := &failOnce{ClientConn: raw, after: func() { tc.afterFail(cancel, start) }}
			nse := tc.nse
			if nse == nil {
				nse = &registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5001"}
			}

			began := time.Now()
			registered, unregister, err := client.Register(ctx, cc, nse, client.WithTimeout(timeout))
			took := time.Since(began)
			require.Equal(t, tc.wantCode, status.Code(err), "%v", err)
			for _, want := range tc.wantMsg {
				require.ErrorContains(t, err, strings.ReplaceAll(want, "$sock", "unix://"+path))
			}
			require.Less(t, took, timeout+5*time.Second, "gave up within the timeout")
			if tc.wantLong {
				require.GreaterOrEqual(t, took, timeout, "tried for the whole timeout")
			}
			if err != nil {
				require.Nil(t, unregister)
				return
			}
			require.Equal(t, "nse-1", registered.GetName())
			require.Equal(t, []string{"nse-1"}, names(t, reg))
			require.NoError(t, unregister(ctx))
			require.Empty(t, names(t, reg))
		})
	}
}

func TestDialRefusesURLsThatNameNoRegistry(t *testing.T) {
	for _, tc := range []struct {
		name string
		u    *url.URL
		want string
	}{
		{"another scheme", &url.URL{Scheme: "http", Host: "registry:5002"}, `scheme "http" is not supported`},
		{"unix URL with a host", &url.URL{Scheme: "unix", Host: "registry.sock"}, `a unix URL has three slashes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Dial(tc.u)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// answerLost lets the first Register reach the registry, then plays a caller that gave up
// before the answer came: it cancels and reports Canceled.
type answerLost struct {
	*grpc.ClientConn
	once   sync.Once
	cancel context.CancelFunc
}

func (a *answerLost) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	err := a.ClientConn.Invoke(ctx, method, args, reply, opts...)
	lost := false
	if method == "/registry.NetworkServiceEndpointRegistry/Register" {
		a.once.Do(func() { lost = true })
	}
	if lost {
		a.cancel()
		return status.FromContextError(context.Canceled).Err()
	}
	return err
}

// TestCallerGivingUpDuringTheFirstRegistrationLeavesNothing: a program stopped while its first
// registration is on its way has nothing registered afterwards, though the registry took it.
func TestCallerGivingUpDuringTheFirstRegistrationLeavesNothing(t *testing.T) {
	path := socketPath(t)
	reg, stop := serve(t, path)
	t.Cleanup(stop)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cc := &answerLost{ClientConn: dial(t, path), cancel: cancel}
	nse := &registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5001"}

	_, unregister, err := client.Register(ctx, cc, nse, client.WithTimeout(time.Second))
	require.Equal(t, codes.Canceled, status.Code(err), "%v", err)
	require.Nil(t, unregister)
	require.Empty(t, names(t, reg), "the registration the caller gave up on was undone")
}
