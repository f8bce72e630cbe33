package expire_test

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
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

var start = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// fixture is begin, expire and a store on a fake clock, with a watcher of everything.
type fixture struct {
	ctx    context.Context
	fake   *clock.Fake
	chain  next.NSE
	events chan *event
}

func setup(t *testing.T, opts ...expire.Option) *fixture {
	ctx, cancel := context.WithCancel(context.Background())
	fake := clock.NewFake(start)
	f := &fixture{ctx: clock.WithClock(ctx, fake), fake: fake, events: make(chan *event, 100),
		chain: next.Chain(begin.NewNSE(), expire.NewNSE(opts...), memory.NewNSE())}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.chain.Find(ctx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(ev *event) error {
			f.events <- ev
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func (f *fixture) register(t *testing.T, r *nse) *nse {
	t.Helper()
	got, err := f.chain.Register(f.ctx, r)
	require.NoError(t, err)
	require.Equal(t, r.GetName(), (<-f.events).Record.GetName())
	return got
}

// expect waits for the Deleted event of name.
func (f *fixture) expectDeleted(t *testing.T, name string) {
	t.Helper()
	ev := <-f.events
	require.True(t, ev.Deleted, "want %s deleted, got %v", name, ev)
	require.Equal(t, name, ev.Record.GetName())
}

func (f *fixture) stored(t *testing.T) []string {
	var got []string
	require.NoError(t, f.chain.Find(f.ctx, &next.Query[*nse]{Record: &nse{}}, func(ev *event) error {
		got = append(got, ev.Record.GetName())
		return nil
	}))
	return got
}

func at(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(start.Add(d)) }

func TestExpiry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []expire.Option
		url      string
		given    *timestamppb.Timestamp
		lifetime time.Duration // from start to the expiry
	}{
		{"default lifetime, IPv4", nil, "tcp://127.0.0.1:5000", nil, time.Minute},
		{"lifetime option, IPv6", []expire.Option{expire.WithDefaultLifetime(10 * time.Second)}, "tcp://[::1]:5000", nil, 10 * time.Second},
		{"expiration_time given, unix", nil, "unix:///run/vw/nse.sock", at(90 * time.Second), 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t, tc.opts...)
			got := f.register(t, &nse{Name: "nse-1", Url: tc.url, ExpirationTime: tc.given})
			require.Equal(t, start.Add(tc.lifetime), got.GetExpirationTime().AsTime(), "the record carries its expiry")

			f.fake.Advance(tc.lifetime - time.Second)
			require.Equal(t, 1, f.fake.Pending(), "not yet")
			require.Equal(t, []string{"nse-1"}, f.stored(t))

			f.fake.Advance(time.Second)
			f.expectDeleted(t, "nse-1")
			require.Empty(t, f.stored(t))
		})
	}
}

func TestRegisterMovesDeadlineAndUnregisterStopsIt(t *testing.T) {
	f := setup(t)
	f.register(t, &nse{Name: "nse-1", Url: "tcp://127.0.0.1:5000"})
	f.fake.Advance(40 * time.Second)
	f.register(t, &nse{Name: "nse-1", Url: "tcp://127.0.0.1:5000"}) // now expires at 100 s
	require.Equal(t, 1, f.fake.Pending(), "the old timer is gone")

	f.fake.Advance(30 * time.Second)
	require.Equal(t, []string{"nse-1"}, f.stored(t), "the first deadline passed without effect")
	f.fake.Advance(30 * time.Second)
	f.expectDeleted(t, "nse-1")

	f.register(t, &nse{Name: "nse-2", Url: "tcp://[::1]:5000"})
	require.NoError(t, f.chain.Unregister(f.ctx, &nse{Name: "nse-2"}))
	f.expectDeleted(t, "nse-2")
	require.Zero(t, f.fake.Pending(), "Unregister stops the timer")
}

func TestFailedRegisterKeepsTheDeadline(t *testing.T) {
	fake := clock.NewFake(start)
	ctx := clock.WithClock(context.Background(), fake)
	fail := inject.NewNSE(nil)
	store := memory.NewNSE()
	chain := next.Chain(begin.NewNSE(), expire.NewNSE(), next.NSE(fail), store)

	_, err := chain.Register(ctx, &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
	require.NoError(t, err)
	fail.FailRegisters(status.Error(codes.Unavailable, "store down"))
	fake.Advance(30 * time.Second)
	_, err = chain.Register(ctx, &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
	require.Equal(t, codes.Unavailable, status.Code(err))

	events := make(chan *event, 2)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = store.Find(wctx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(ev *event) error {
			events <- ev
			return nil
		})
	}()
	require.False(t, (<-events).Deleted, "the watch is on")
	fake.Advance(30 * time.Second)
	ev := <-events
	require.True(t, ev.Deleted)
	require.Equal(t, "nse-1", ev.Record.GetName(), "the first registration expired as set")
	cancel()
	<-done
}

func TestRefused(t *testing.T) {
	fake := clock.NewFake(start)
	ctx := clock.WithClock(context.Background(), fake)
	for _, tc := range []struct {
		name  string
		chain next.NSE
		in    *nse
		code  codes.Code
		says  string
	}{
		{"expiration_time passed", next.Chain(begin.NewNSE(), expire.NewNSE(), memory.NewNSE()),
			&nse{Name: "nse-1", ExpirationTime: at(-time.Second)}, codes.InvalidArgument, "has passed"},
		{"expiration_time is now", next.Chain(begin.NewNSE(), expire.NewNSE(), memory.NewNSE()),
			&nse{Name: "nse-1", ExpirationTime: at(0)}, codes.InvalidArgument, "leave it empty"},
		{"no begin", next.Chain(expire.NewNSE(), memory.NewNSE()),
			&nse{Name: "nse-1"}, codes.Internal, "put begin.NewNSE() before it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.chain.Register(ctx, tc.in)
			require.Equal(t, tc.code, status.Code(err))
			require.Contains(t, err.Error(), tc.says)
			require.Zero(t, fake.Pending())
		})
	}
}
