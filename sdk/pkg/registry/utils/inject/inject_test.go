package inject_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

var down = status.Error(codes.Unavailable, "registry down")

func stored(t *testing.T, store next.NSE) []string {
	t.Helper()
	var names []string
	require.NoError(t, store.Find(context.Background(), &next.Query[*nse]{Record: &nse{}}, func(ev *event) error {
		names = append(names, ev.Record.GetName())
		return nil
	}))
	return names
}

func TestRegisterAndUnregister(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		registerErr, unregister error
		wantStored              []string // after the Register
	}{
		{"passes when nil", nil, nil, []string{"nse-1"}},
		{"Register fails before the rest", down, nil, nil},
		{"Unregister fails after the rest", nil, down, []string{"nse-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store := memory.NewNSE()
			fail := inject.NewNSE(tc.registerErr)
			fail.FailUnregisters(tc.unregister)
			chain := next.Chain(next.NSE(fail), store)

			_, err := chain.Register(ctx, &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
			require.ErrorIs(t, err, tc.registerErr)
			require.Equal(t, tc.wantStored, stored(t, store))

			require.ErrorIs(t, chain.Unregister(ctx, &nse{Name: "nse-1"}), tc.unregister)
			require.Empty(t, stored(t, store), "Unregister reached the store either way")

			fail.FailRegisters(nil)
			_, err = chain.Register(ctx, &nse{Name: "nse-2", Url: "tcp://127.0.0.1:5000"})
			require.NoError(t, err, "nil lets Registers through again")
		})
	}
}

func TestNetworkServices(t *testing.T) {
	fail := inject.NewNS(status.Error(codes.PermissionDenied, "no"))
	chain := next.Chain(next.NS(fail), memory.NewNS())
	_, err := chain.Register(context.Background(), &registry.NetworkService{Name: "icmp"})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	fail.FailFinds(down)
	err = chain.Find(context.Background(), &next.Query[*registry.NetworkService]{}, func(*next.Event[*registry.NetworkService]) error { return nil })
	require.ErrorIs(t, err, down)
}

func TestFindFailsAndBreaksWatches(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := memory.NewNSE()
	_, err := store.Register(ctx, &nse{Name: "nse-1", Url: "tcp://127.0.0.1:5000"})
	require.NoError(t, err)
	fail := inject.NewNSE(nil)
	chain := next.Chain(next.NSE(fail), store)

	watch := func(ctx context.Context) (<-chan *event, <-chan error) {
		events, done := make(chan *event, 10), make(chan error, 1)
		go func() {
			done <- chain.Find(ctx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(ev *event) error {
				events <- ev
				return nil
			})
		}()
		return events, done
	}
	events, done := watch(ctx)
	require.Equal(t, "nse-1", (<-events).Record.GetName(), "the watch stands")
	broken := status.Error(codes.Canceled, "the registry is shutting down")
	fail.FailFinds(broken)
	require.ErrorIs(t, <-done, broken, "the running watch ends with the injected error")
	_, done = watch(ctx)
	require.ErrorIs(t, <-done, broken, "a later Find fails at once")

	fail.FailFinds(nil)
	require.Equal(t, []string{"nse-1"}, stored(t, chain), "nil lets Finds through again")
	own, stop := context.WithCancel(ctx)
	events, done = watch(own)
	<-events
	stop()
	require.NoError(t, <-done, "the caller's own cancel ends the watch as the store ends it")
}
