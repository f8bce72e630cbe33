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
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/querycache"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse = registry.NetworkServiceEndpoint
	ns  = registry.NetworkService
)

// counter stands for the registry behind the cache: it counts the Finds that reach it, tells
// each event a watch delivered (once delivered) and each watch that ended, makes the running
// watches fail when broken, and keeps them silent while muted.
type counter[R next.Record] struct {
	muted   atomic.Bool
	passes  atomic.Int32
	watched chan *next.Event[R]
	ended   chan error
	broken  chan struct{}
}

func newCounter[R next.Record]() *counter[R] {
	return &counter[R]{watched: make(chan *next.Event[R], 100), ended: make(chan error, 10), broken: make(chan struct{})}
}

func (c *counter[R]) Register(ctx context.Context, r R) (R, error) {
	return next.Of[R](ctx).Register(ctx, r)
}

func (c *counter[R]) Unregister(ctx context.Context, r R) error {
	return next.Of[R](ctx).Unregister(ctx, r)
}

func (c *counter[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	if !q.Watch {
		c.passes.Add(1)
		return next.Of[R](ctx).Find(ctx, q, send)
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
	err := next.Of[R](ctx).Find(ctx, q, func(ev *next.Event[R]) error {
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

type fixture[R next.Record] struct {
	ctx   context.Context
	stop  context.CancelFunc // ends the cache's context
	fake  *clock.Fake
	count *counter[R]
	store next.Element[R]
	chain next.Element[R]
	show  func(R) string // what find reports of a record
}

// setup puts the cache (made by newCache with opts) before a counter and store, which holds
// records.
func setup[R next.Record](t *testing.T, newCache func(context.Context, ...querycache.Option) next.Element[R],
	store next.Element[R], show func(R) string, records []R, opts ...querycache.Option,
) *fixture[R] {
	fake := clock.NewFake(start)
	ctx, stop := context.WithCancel(clock.WithClock(context.Background(), fake))
	f := &fixture[R]{ctx: ctx, stop: stop, fake: fake, count: newCounter[R](), store: store, show: show}
	f.chain = next.Chain(newCache(ctx, opts...), next.Element[R](f.count), f.store)
	for _, r := range records {
		_, err := f.store.Register(ctx, r)
		require.NoError(t, err)
	}
	t.Cleanup(stop)
	return f
}

// setupNSE is the fixture for endpoints, with three of them.
func setupNSE(t *testing.T, opts ...querycache.Option) *fixture[*nse] {
	return setup(t, querycache.NewNSE, memory.NewNSE(), func(r *nse) string { return r.GetName() + " " + r.GetUrl() }, []*nse{
		{Name: "nse-v4", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5000"},
		{Name: "nse-v6", NetworkServiceNames: []string{"icmp"}, Url: "tcp://[::1]:5000"},
		{Name: "nse-unix", NetworkServiceNames: []string{"vpn"}, Url: "unix:///run/vw/nse.sock"},
	}, opts...)
}

// setupNS is the fixture for network services, with two of them.
func setupNS(t *testing.T, opts ...querycache.Option) *fixture[*ns] {
	return setup(t, querycache.NewNS, memory.NewNS(), func(r *ns) string { return r.GetName() + " " + r.GetPayload() }, []*ns{
		{Name: "icmp", Payload: "IP"},
		{Name: "l2", Payload: "ETHERNET"},
	}, opts...)
}

// find returns what a Find of q reports, and scribbles over each record it gets, as a caller may.
func (f *fixture[R]) find(t *testing.T, q R) []string {
	t.Helper()
	var got []string
	require.NoError(t, f.chain.Find(context.Background(), &next.Query[R]{Record: q}, func(ev *next.Event[R]) error {
		got = append(got, f.show(ev.Record))
		proto.Reset(ev.Record)
		return nil
	}))
	return got
}

func (f *fixture[R]) watched(t *testing.T, n int) {
	t.Helper()
	for range n {
		<-f.count.watched
	}
}

func TestAnswersFromCacheKeptByWatch(t *testing.T) {
	f := setupNSE(t)
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
	f := setupNSE(t)
	q := &nse{Name: "nse-v6"}
	f.count.muted.Store(true) // the watch reports nothing: the cache never has the records
	for i := range 3 {
		require.Equal(t, []string{"nse-v6 tcp://[::1]:5000"}, f.find(t, q))
		require.Equal(t, int32(i+1), f.count.passes.Load(), "without a watch, every Find goes to the registry")
	}
}

func TestWatchFailureDropsEntry(t *testing.T) {
	f := setupNSE(t)
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
	f := setupNSE(t, querycache.WithIdleTimeout(time.Minute))
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
	f := setupNSE(t)
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
	f := setupNSE(t)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *next.Event[*nse], 10)
	done := make(chan error, 1)
	go func() {
		done <- f.chain.Find(ctx, &next.Query[*nse]{Record: &nse{Name: "nse-v4"}, Watch: true}, func(ev *next.Event[*nse]) error {
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

func TestNSAnswersFromCacheKeptByWatch(t *testing.T) {
	f := setupNS(t)
	icmp := &ns{Name: "icmp"}
	require.Equal(t, []string{"icmp IP"}, f.find(t, icmp))
	f.watched(t, 1)
	require.Equal(t, []string{"icmp IP"}, f.find(t, icmp), "copies: what the caller changed is not in the cache")
	require.Equal(t, int32(1), f.count.passes.Load(), "later Finds are answered from the cache")

	steps := []struct {
		name   string
		change func() error
		want   []string
	}{
		{"registered again, changed", func() error {
			_, err := f.store.Register(f.ctx, &ns{Name: "icmp", Payload: "ETHERNET"})
			return err
		}, []string{"icmp ETHERNET"}},
		{"deleted", func() error { return f.store.Unregister(f.ctx, &ns{Name: "icmp"}) }, nil},
		{"registered anew", func() error {
			_, err := f.store.Register(f.ctx, &ns{Name: "icmp", Payload: "IP"})
			return err
		}, []string{"icmp IP"}},
	}
	for _, step := range steps {
		require.NoError(t, step.change(), step.name)
		f.watched(t, 1)
		require.Equal(t, step.want, f.find(t, icmp), step.name)
		require.Equal(t, int32(1), f.count.passes.Load(), "%s: answered from the cache", step.name)
	}

	// Another query has its own entry.
	require.Equal(t, []string{"l2 ETHERNET"}, f.find(t, &ns{Payload: "ETHERNET"}))
	require.Equal(t, int32(2), f.count.passes.Load())
}

func TestNSIdleEntryIsDropped(t *testing.T) {
	f := setupNS(t, querycache.WithIdleTimeout(time.Minute))
	q := &ns{Name: "l2"}
	f.find(t, q)
	f.watched(t, 1)
	f.find(t, q)
	require.Equal(t, int32(1), f.count.passes.Load())

	f.fake.Advance(time.Minute)
	require.NoError(t, <-f.count.ended, "an idle entry's watch is stopped")
	require.Equal(t, []string{"l2 ETHERNET"}, f.find(t, q))
	require.Equal(t, int32(2), f.count.passes.Load(), "after the idle time, a Find goes to the registry again")
}
