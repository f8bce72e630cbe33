package grpcserve_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/health/grpc_health_v1"

	"vwire.dev/sdk/pkg/tools/grpcserve"
)

// TestRegisteredUnregistersBeforeItStopsServing: at a signal, the component is unregistered while
// it still answers, and only then stops serving.
func TestRegisteredUnregistersBeforeItStopsServing(t *testing.T) {
	u := socket(t)
	serving, stop := context.WithCancel(context.Background())
	defer stop()
	errs, err := grpcserve.Serve(serving, u, nothing)
	require.NoError(t, err)
	ctx, signal := context.WithCancel(context.Background())
	health := grpc_health_v1.NewHealthClient(dial(t, u))
	var while grpc_health_v1.HealthCheckResponse_ServingStatus

	err = grpcserve.Registered(ctx, errs, stop, func() (func() error, error) {
		signal() // registered, then a signal comes
		return func() error {
			resp, err := health.Check(context.Background(), &grpc_health_v1.HealthCheckRequest{})
			require.NoError(t, err)
			while = resp.GetStatus()
			return errors.New("registry: gone")
		}, nil
	})
	require.EqualError(t, err, "registry: gone", "the unregistration's error is told")
	require.Equal(t, grpc_health_v1.HealthCheckResponse_SERVING, while, "serving while unregistering")
	_, err = os.Stat(u.Path)
	require.ErrorIs(t, err, os.ErrNotExist, "serving has ended when Registered returns")
}

func TestRegisteredWhenRegistrationFails(t *testing.T) {
	for _, tc := range []struct {
		name     string
		signaled bool
		want     string
	}{
		{name: "the registry refuses", want: "register at unix:///nsm.sock: Unavailable"},
		{name: "stopped while registering", signaled: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := socket(t)
			serving, stop := context.WithCancel(context.Background())
			defer stop()
			errs, err := grpcserve.Serve(serving, u, nothing)
			require.NoError(t, err)
			ctx, signal := context.WithCancel(context.Background())
			defer signal()

			err = grpcserve.Registered(ctx, errs, stop, func() (func() error, error) {
				if tc.signaled {
					signal()
				}
				return nil, errors.New("register at unix:///nsm.sock: Unavailable")
			})
			if tc.want == "" {
				require.NoError(t, err, "nothing is registered: a stop, not a failure")
			} else {
				require.EqualError(t, err, tc.want)
			}
			_, err = os.Stat(u.Path)
			require.ErrorIs(t, err, os.ErrNotExist, "serving has ended")
		})
	}
}
