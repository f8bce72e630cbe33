package grpcserve_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/tools/grpcserve"
)

// TestListenAndServe: a server the program built is served with the health service, and stops
// with its context, its socket removed.
func TestListenAndServe(t *testing.T) {
	u := socket(t)
	s := grpc.NewServer(grpc.WaitForHandlers(true))
	networkservice.RegisterNetworkServiceServer(s, echo{})
	ctx, cancel := context.WithCancel(context.Background())
	errs := grpcserve.ListenAndServe(ctx, u, s)

	cc := dial(t, u)
	resp, err := grpc_health_v1.NewHealthClient(cc).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, grpc_health_v1.HealthCheckResponse_SERVING, resp.GetStatus())
	_, err = networkservice.NewNetworkServiceClient(cc).Request(ctx, &networkservice.NetworkServiceRequest{})
	require.NoError(t, err, "the program's own service")

	cancel()
	for err := range errs {
		t.Error(err)
	}
	_, err = os.Stat(u.Path)
	require.ErrorIs(t, err, os.ErrNotExist, "the socket file is removed")
}

func TestListenAndServeOnAURLThatCannotBeServed(t *testing.T) {
	u := socket(t)
	file := filepath.Join(filepath.Dir(u.Path), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	u.Path = file
	var got []error
	for err := range grpcserve.ListenAndServe(context.Background(), u, grpc.NewServer()) {
		got = append(got, err)
	}
	require.Len(t, got, 1)
	require.EqualError(t, got[0], "hopurl: listen on unix://"+file+": "+file+" exists and is not a socket; remove it or pick another path")
}

// blocking holds every Request until its context ends, then takes its time to return, as a
// chain that undoes what it started does.
type blocking struct {
	networkservice.NetworkServiceServer
	arrived  chan struct{}
	release  chan struct{}
	returned atomic.Bool
}

func (b *blocking) Request(ctx context.Context, _ *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	close(b.arrived)
	<-ctx.Done()
	<-b.release
	b.returned.Store(true)
	return nil, status.FromContextError(ctx.Err()).Err()
}

// TestStopWaitsForCallsInFlight: a call in flight when serving stops is cancelled, and the
// channel closes only once its handler returned, so a program may close what handlers use.
func TestStopWaitsForCallsInFlight(t *testing.T) {
	u := socket(t)
	b := &blocking{arrived: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	errs, err := grpcserve.Serve(ctx, u, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		networkservice.RegisterNetworkServiceServer(s, b)
	}))
	require.NoError(t, err)
	called := make(chan error, 1)
	go func() {
		_, err := networkservice.NewNetworkServiceClient(dial(t, u)).Request(context.Background(), &networkservice.NetworkServiceRequest{})
		called <- err
	}()
	<-b.arrived

	cancel()
	require.Equal(t, codes.Unavailable, status.Code(<-called), "the caller is told at once")
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for err := range errs {
			t.Error(err)
		}
	}()
	select {
	case <-drained:
		t.Fatal("serving ended while a handler still ran")
	default:
	}
	close(b.release)
	<-drained
	require.True(t, b.returned.Load(), "the handler returned before serving ended")
}
