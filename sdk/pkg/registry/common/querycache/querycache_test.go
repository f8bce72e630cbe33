package querycache_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/querycache"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

// counter stands for the registry behind the cache: it counts the Finds that reach it, tells
// each event a watch delivered (once delivered) and each watch that ended, makes the running
// watches fail when broken, and keeps them silent while muted.
type counter struct {
	muted   atomic.Bool
	passes  atomic.Int32
	watched chan *event
	ended   chan error
	broken  chan struct{}
}

func newCounter() *counter {
	return &counter{watched: make(chan *event, 100), ended: make(chan error, 10), broken: make(chan struct{})}
}

func (c *counter) Register(ctx context.Context, r *nse) (*nse, error) {
	return next.Of[*nse](ctx).Register(ctx, r)
}

func (c *counter) Unregister(ctx context.Context, r *nse) error {
	return next.Of[*nse](ctx).Unregister(ctx, r)
}

func (c *counter) Find(ctx context.Context, q *next.Query[*nse], send func(*event) error) error {
	if !q.Watch {
		c.passes.Add(1)
		return next.Of[*nse](ctx).Find(ctx, q, send)
	}
	if c.muted.Load() {
		<-ctx.Done()
		c.ended <- nil
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.broken:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := next.Of[*nse](ctx).Find(ctx, q, func(ev *event) error {
		err := send(ev)
		c.watched <- ev
		return err
	})
	select {
	case <-c.broken:
		err = status.Error(codes.Unavailable, "registry gone")
	default:
	}
	c.ended <- err
	return err
}

var start = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	ctx   context.Context
	stop  context.CancelFunc // ends the cache's context
	fake  *clock.Fake
	count *counter
	store next.NSE
	chain next.NSE
}

func setup(t *testing.T, opts ...querycache.Option) *fixture {
	fake := clock.NewFake(start)
	ctx, stop := context.WithCancel(clock.WithClock(context.Background(), fake))
	f := &fixture{ctx: ctx, stop: stop, fake: fake, count: newCounter(), store: memory.NewNSE()}
	f.chain = next.Chain(querycache.NewNSE(ctx, opts...), next.NSE(f.count), f.store)
	for _, r := range []*nse{
		{Name: "nse-v4", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5000"},
		{Name: "nse-v6", NetworkServiceNames: []string{"icmp"}, Url: "tcp://[::1]:5000"},
		{Name: "nse-unix", NetworkServiceNames: []string{"vpn"}, Url: "unix:///run/vw/nse.sock"},
	} {
		_, err := f.store.Register(ctx, r)
		require.NoError(t, err)
	}
	t.Cleanup(stop)
	return f
}

func (f *fixture) find(t *testing.T, q *nse) []string {
	t.Helper()
	var got []string
	require.NoError(t, f.chain.Find(context.Background(), &next.Query[*nse]{Record: q}, func(ev *event) error {
		got = append(got, ev.Record.GetName()+" "+ev.Record.GetUrl())
		ev.Record.Url = "changed by the caller"
		return nil
	}))
	return got
}

func (f *fixture) watched(t *testing.T, n int) {
	t.Helper()
	for range n {
		<-f.count.watched
	}
}

func TestAnswersFromCacheKeptByWatch(t *testing.T) {
	f := setup(t)
	icmp := &nse{NetworkServiceNames: []string{"icmp"}}
	want := []string{"nse-v4 tcp://127.0.0.1:5000", "nse-v6 tcp://[::1]:5000"}

	require.Equal(t, want, f.find(t, icmp))
	require.Equal(t, int32(1), f.count.passes.Load(), "the first Find goes to the registry")
	f.watched(t, 2) // the watch reported both
	require.Equal(t, want, f.find(t, icmp), "copies: what the caller changed is not in the cache")
	require.Equal(t, want, f.find(t, icmp))
	require.Equal(t, int32(1), f.count.passes.Load(), "later Finds are answered from the cache")

	_, err := f.store.Register(f.ctx, &nse{Name: "nse-new", NetworkServiceNames: []string{"icmp"}, Url: "tcp://[fd00::5]:5000"})
	require.NoError(t, err)
	require.NoError(t, f.store.Unregister(f.ctx, &nse{Name: "nse-v4"}))
	f.watched(t, 2)
	require.Equal(t, []string{"nse-new tcp://[fd00::5]:5000", "nse-v6 tcp://[::1]:5000"}, f.find(t, icmp))
	require.Equal(t, int32(1), f.count.passes.Load())

	// Another query has its own entry.
	require.Equal(t, []string{"nse-unix unix:///run/vw/nse.sock"}, f.find(t, &nse{Name: "nse-unix"}))
	require.Equal(t, int32(2), f.count.passes.Load())
}

func TestNotReadyUntilWatchCaughtUp(t *testing.T) {
	f := setup(t)
	q := &nse{Name: "nse-v6"}
	f.count.muted.Store(true) // the watch reports nothing: the cache never has the records
	for i := range 3 {
		require.Equal(t, []string{"nse-v6 tcp://[::1]:5000"}, f.find(t, q))
		require.Equal(t, int32(i+1), f.count.passes.Load(), "without a watch, every Find goes to the registry")
	}
}

func TestWatchFailureDropsEntry(t *testing.T) {
	f := setup(t)
	q := &nse{NetworkServiceNames: []string{"vpn"}}
	f.find(t, q)
	f.watched(t, 1)
	f.find(t, q)
	require.Equal(t, int32(1), f.count.passes.Load())

	close(f.count.broken)
	require.Equal(t, codes.Unavailable, status.Code(<-f.count.ended))
	require.Eventually(t, func() bool {
		f.find(t, q)
		return f.count.passes.Load() > 1
	}, 5*time.Second, time.Millisecond, "after the watch failed, Finds go to the registry")
}

func TestIdleEntryIsDropped(t *testing.T) {
	f := setup(t, querycache.WithIdleTimeout(time.Minute))
	q := &nse{Name: "nse-v4"}
	f.find(t, q)
	f.watched(t, 1)

	f.fake.Advance(40 * time.Second)
	f.find(t, q) // used: the idle time starts again
	f.fake.Advance(20 * time.Second)
	f.find(t, q)
	require.Equal(t, int32(1), f.count.passes.Load(), "used within the idle time")
	require.Eventually(t, func() bool { return f.fake.Pending() == 1 }, 5*time.Second, time.Millisecond,
		"the idle timer fired and was set again, for the time left")

	f.fake.Advance(time.Minute)
	require.NoError(t, <-f.count.ended, "an idle entry's watch is stopped")
	f.find(t, q)
	require.Equal(t, int32(2), f.count.passes.Load())
}

func TestContextEndStopsWatches(t *testing.T) {
	f := setup(t)
	f.find(t, &nse{Name: "nse-v4"})
	f.find(t, &nse{Name: "nse-v6"})
	f.stop()
	for range 2 {
		<-f.count.ended
	}
	f.find(t, &nse{Name: "nse-v4"})
	require.Empty(t, f.count.ended, "no watch starts after the end")
}

func TestPassesThrough(t *testing.T) {
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *event, 10)
	done := make(chan error, 1)
	go func() {
		done <- f.chain.Find(ctx, &next.Query[*nse]{Record: &nse{Name: "nse-v4"}, Watch: true}, func(ev *event) error {
			got <- ev
			return nil
		})
	}()
	require.Equal(t, "nse-v4", (<-got).Record.GetName(), "a caller's watch goes to the registry")
	cancel()
	require.NoError(t, <-done)
	<-f.count.ended

	_, err := f.chain.Register(f.ctx, &nse{Name: "nse-x", Url: "tcp://[::1]:5001"})
	require.NoError(t, err)
	require.NoError(t, f.chain.Unregister(f.ctx, &nse{Name: "nse-x"}))
	require.Zero(t, f.count.passes.Load())
}
