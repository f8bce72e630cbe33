package refresh_test

import (
	"context"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/expire"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/refresh"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/checks"
	"vwire.dev/sdk/pkg/registry/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

var start = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// fixture is an endpoint's client chain (begin, refresh) joined in-process to a registry (begin,
// expire, store) on a fake clock, with a watcher of deletions.
type fixture struct {
	ctx     context.Context
	stop    context.CancelFunc // ends refresh's context
	fake    *clock.Fake
	seen    *checks.Recorder[*nse] // the Registers refresh answered, its own refreshes included
	down    *inject.Errors[*nse]   // the registry's side: refuses Registers when told to
	chain   next.NSE
	deleted chan string
}

func setup(t *testing.T) *fixture {
	fake := clock.NewFake(start)
	ctx := clock.WithClock(context.Background(), fake)
	refreshCtx, stop := context.WithCancel(ctx)
	seen, down, store := checks.NewNSE(), inject.NewNSE(nil), memory.NewNSE()
	f := &fixture{ctx: ctx, stop: stop, fake: fake, seen: seen, down: down, deleted: make(chan string, 10),
		chain: next.Chain(begin.NewNSE(), next.NSE(seen), refresh.NewNSE(refreshCtx), next.NSE(down),
			begin.NewNSE(), expire.NewNSE(), store)}
	watchCtx, cancel := context.WithCancel(ctx)
	done, live := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_ = store.Find(watchCtx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(ev *event) error {
			switch {
			case ev.Record.GetName() == "live":
				close(live)
			case ev.Deleted:
				f.deleted <- ev.Record.GetName()
			}
			return nil
		})
	}()
	_, err := store.Register(ctx, &nse{Name: "live"}) // the watcher's first event: it is on
	require.NoError(t, err)
	<-live
	t.Cleanup(func() { stop(); cancel(); <-done })
	return f
}

func (f *fixture) register(t *testing.T, r *nse) *nse {
	t.Helper()
	got, err := f.chain.Register(f.ctx, r)
	require.NoError(t, err)
	return got
}

// answered waits until refresh has answered n Registers and returns the last.
func (f *fixture) answered(t *testing.T, n int) checks.Call[*nse] {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.seen.Registers()) >= n }, 5*time.Second, time.Millisecond)
	regs := f.seen.Registers()
	require.Len(t, regs, n)
	return regs[n-1]
}

func TestRefreshKeepsEndpointRegistered(t *testing.T) {
	for _, url := range []string{"tcp://127.0.0.1:5000", "tcp://[::1]:5000", "unix:///run/vw/nse.sock"} {
		t.Run(url, func(t *testing.T) {
			f := setup(t)
			got := f.register(t, &nse{Name: "nse-1", Url: url, NetworkServiceNames: []string{"icmp"},
				ExpirationTime: timestamppb.New(start.Add(30 * time.Second))})
			require.Equal(t, start.Add(30*time.Second), got.GetExpirationTime().AsTime())

			// A third of 30 s, then a third of each default lifetime of a minute.
			for i, wait := range []time.Duration{10 * time.Second, 20 * time.Second, 20 * time.Second, 20 * time.Second} {
				f.fake.Advance(wait - time.Millisecond)
				require.Equal(t, 2, f.fake.Pending(), "refresh %d came early (pending: refresh and expiry)", i)
				f.fake.Advance(time.Millisecond)
				again := f.answered(t, i+2)
				require.NoError(t, again.Err)
				require.Equal(t, url, again.Record.GetUrl())
				require.Equal(t, []string{"icmp"}, again.Record.GetNetworkServiceNames())
				require.Nil(t, again.Record.GetExpirationTime(), "a refresh lets the registry grant its lifetime")
			}
			require.Empty(t, f.deleted, "never expired")
		})
	}
}

func TestUnregisterAndContextEndStopRefreshing(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(*fixture) error
	}{
		{"Unregister", func(f *fixture) error { return f.chain.Unregister(f.ctx, &nse{Name: "nse-1"}) }},
		{"context end", func(f *fixture) error { f.stop(); return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			f.register(t, &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
			require.NoError(t, tc.end(f))
			f.fake.Advance(time.Minute)
			require.Equal(t, "nse-1", <-f.deleted, "unregistered or expired, never refreshed")
			require.Len(t, f.seen.Registers(), 1, "no refresh")
		})
	}
}

func TestFailedRefreshIsNotRepeatedHere(t *testing.T) {
	f := setup(t)
	f.register(t, &nse{Name: "nse-1", Url: "tcp://127.0.0.1:5000"})

	f.down.FailRegisters(status.Error(codes.Unavailable, "registry down"))
	f.fake.Advance(20 * time.Second)
	require.Equal(t, codes.Unavailable, status.Code(f.answered(t, 2).Err))
	require.Equal(t, 1, f.fake.Pending(), "only the registry's expiry is left")
	f.fake.Advance(40 * time.Second)
	require.Equal(t, "nse-1", <-f.deleted, "the registry expired it")
}

func TestNothingToRefresh(t *testing.T) {
	fake := clock.NewFake(start)
	ctx := clock.WithClock(context.Background(), fake)
	passed := timestamppb.New(start.Add(-time.Hour))
	for _, tc := range []struct {
		name  string
		chain next.NSE
		exp   *timestamppb.Timestamp
		code  codes.Code
	}{
		{"registration does not expire", next.Chain(begin.NewNSE(), refresh.NewNSE(ctx), memory.NewNSE()), nil, codes.OK},
		{"no begin", next.Chain(refresh.NewNSE(ctx), memory.NewNSE()), nil, codes.Internal},
		{"registry refuses", next.Chain(begin.NewNSE(), refresh.NewNSE(ctx), begin.NewNSE(), expire.NewNSE(), memory.NewNSE()), passed, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.chain.Register(ctx, &nse{Name: "nse-1", Url: "tcp://[::1]:5000", ExpirationTime: tc.exp})
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			require.Zero(t, fake.Pending())
		})
	}
}
