package client_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

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

func names(t *testing.T, reg *registryserver.Server) []string {
	var out []string
	require.NoError(t, reg.NSE.Find(context.Background(), &next.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{}},
		func(ev *next.Event[*registry.NetworkServiceEndpoint]) error {
			out = append(out, ev.Record.GetName())
			return nil
		}))
	return out
}

func TestRegisteredAgainAfterRegistryRestart(t *testing.T) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "registry.sock")
	reg, stop := serve(t, path)

	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 200 * time.Millisecond}}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	nse := &registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5001"}
	registered, unregister, err := client.Register(ctx, cc, nse)
	require.NoError(t, err)
	require.Equal(t, []string{"nse-1"}, registered.GetPathIds()[:1], "the registrant's id comes first")
	require.Equal(t, []string{"nse-1"}, names(t, reg))

	stop()
	reg, stop = serve(t, path)
	t.Cleanup(stop)
	require.Eventually(t, func() bool { return len(names(t, reg)) == 1 }, 10*time.Second, 5*time.Millisecond,
		"registered again at the restarted registry without waiting for a refresh")

	require.NoError(t, unregister(ctx))
	require.Empty(t, names(t, reg))
}
