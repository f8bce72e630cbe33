package checks_test

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
	"vwire.dev/sdk/pkg/registry/utils/checks"
	"vwire.dev/sdk/pkg/registry/utils/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

func TestRecorderKeepsCallsAnswersAndRegistered(t *testing.T) {
	ctx := context.Background()
	rec, fail := checks.NewNSE(), inject.NewNSE(nil)
	chain := next.Chain(next.NSE(rec), next.NSE(fail), memory.NewNSE())

	in := &nse{Name: "nse-v4", Url: "tcp://127.0.0.1:5000"}
	_, err := chain.Register(ctx, in)
	require.NoError(t, err)
	in.Url = "changed by the caller"
	_, err = chain.Register(ctx, &nse{Name: "nse-v6", Url: "tcp://[::1]:5000"})
	require.NoError(t, err)
	down := status.Error(codes.Unavailable, "registry down")
	fail.FailRegisters(down)
	_, err = chain.Register(ctx, &nse{Name: "nse-unix", Url: "unix:///run/vw/nse.sock"})
	require.ErrorIs(t, err, down)
	require.NoError(t, chain.Unregister(ctx, &nse{Name: "nse-v4"}))
	require.NoError(t, chain.Find(ctx, &next.Query[*nse]{Record: &nse{Name: "nse-v6"}}, func(*event) error { return nil }))

	regs := rec.Registers()
	require.Len(t, regs, 3)
	require.Equal(t, "tcp://127.0.0.1:5000", regs[0].Record.GetUrl(), "a copy, as it came in")
	require.NoError(t, regs[1].Err)
	require.ErrorIs(t, regs[2].Err, down, "with the answer of the rest of the chain")
	require.Equal(t, "nse-v4", rec.Unregisters()[0].Record.GetName())
	finds := rec.Finds()
	require.Len(t, finds, 1)
	require.Equal(t, "nse-v6", finds[0].Record.GetName())
	require.False(t, finds[0].Watch)
	require.NoError(t, finds[0].Err)
	require.Equal(t, []string{"nse-v6"}, rec.Registered(), "registered and not unregistered; the refused one is not")
}

func TestWatchIsRecordedWhenItEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	rec := checks.NewNS()
	chain := next.Chain(next.NS(rec), memory.NewNS())
	_, err := chain.Register(ctx, &registry.NetworkService{Name: "icmp", Payload: "IP"})
	require.NoError(t, err)
	seen, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- chain.Find(ctx, &next.Query[*registry.NetworkService]{Record: &registry.NetworkService{}, Watch: true},
			func(*next.Event[*registry.NetworkService]) error { close(seen); return nil })
	}()
	<-seen
	require.Empty(t, rec.Finds(), "a standing watch is not recorded yet")
	cancel()
	require.NoError(t, <-done)
	finds := rec.Finds()
	require.Len(t, finds, 1)
	require.True(t, finds[0].Watch)
	require.Equal(t, []string{"icmp"}, rec.Registered())
}
