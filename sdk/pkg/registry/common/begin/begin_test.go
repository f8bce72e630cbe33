package begin_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/checks"
	"vwire.dev/sdk/pkg/registry/utils/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nse = registry.NetworkServiceEndpoint

// overlap counts how many events run inside it at once, per name and in all, holding each until
// the test lets it go.
type overlap struct {
	mu      sync.Mutex
	perName map[string]int
	worst   int
	total   atomic.Int32
	maxAll  atomic.Int32
	hold    chan struct{}
}

func (o *overlap) enter(name string) {
	o.mu.Lock()
	o.perName[name]++
	o.worst = max(o.worst, o.perName[name])
	o.mu.Unlock()
	n := o.total.Add(1)
	for m := o.maxAll.Load(); n > m && !o.maxAll.CompareAndSwap(m, n); m = o.maxAll.Load() {
	}
	<-o.hold
	o.total.Add(-1)
	o.mu.Lock()
	o.perName[name]--
	o.mu.Unlock()
}

func (o *overlap) Register(ctx context.Context, r *nse) (*nse, error) {
	o.enter(r.GetName())
	return next.Of[*nse](ctx).Register(ctx, r)
}

func (o *overlap) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

func (o *overlap) Unregister(ctx context.Context, r *nse) error {
	o.enter(r.GetName())
	return next.Of[*nse](ctx).Unregister(ctx, r)
}

func TestOneEventPerNameAtATime(t *testing.T) {
	o := &overlap{perName: map[string]int{}, hold: make(chan struct{})}
	chain := next.Chain(begin.NewNSE(), next.NSE(o))

	var wg sync.WaitGroup
	for i := range 8 {
		name := []string{"a", "b"}[i%2]
		wg.Go(func() {
			if i%4 == 3 {
				_ = chain.Unregister(context.Background(), &nse{Name: name})
				return
			}
			_, err := chain.Register(context.Background(), &nse{Name: name, Url: "tcp://127.0.0.1:5000"})
			require.NoError(t, err)
		})
	}
	require.Eventually(t, func() bool { return o.total.Load() == 2 }, 5*time.Second, time.Millisecond)
	for range 8 {
		o.hold <- struct{}{}
	}
	wg.Wait()
	require.Equal(t, 1, o.worst, "two events of one name overlapped")
	require.Equal(t, int32(2), o.maxAll.Load(), "different names should run in parallel")
}

type ctxKey struct{}

// grabber keeps the factory of the last event through it, and the value under ctxKey of every
// event's context and whether it was a background event.
type grabber struct {
	mu          sync.Mutex
	factory     begin.EventFactory[*nse]
	values      []any
	backgrounds []bool
}

func (g *grabber) note(ctx context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.factory = begin.FromContext[*nse](ctx)
	g.values = append(g.values, ctx.Value(ctxKey{}))
	g.backgrounds = append(g.backgrounds, begin.Background(ctx))
}

func (g *grabber) Register(ctx context.Context, r *nse) (*nse, error) {
	g.note(ctx)
	return next.Of[*nse](ctx).Register(ctx, r)
}

func (g *grabber) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

func (g *grabber) Unregister(ctx context.Context, r *nse) error {
	g.note(ctx)
	return next.Of[*nse](ctx).Unregister(ctx, r)
}

func (g *grabber) get() (begin.EventFactory[*nse], []any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.factory, slices.Clone(g.values)
}

// behind is what lies behind begin in these tests: a grabber, a recorder, an injector of
// errors, and a store whose hop adds its id to the records it returns, so that a record as
// registered differs from the record given.
type behind struct {
	grab *grabber
	rec  *checks.Recorder[*nse]
	fail *inject.Errors[*nse]
}

func (r behind) chain() next.NSE {
	return next.Chain(next.NSE(r.grab), next.NSE(r.rec), next.NSE(r.fail), updatepath.NewNSE("registry"), memory.NewNSE())
}

func newBehind() behind {
	return behind{grab: &grabber{}, rec: checks.NewNSE(), fail: inject.NewNSE(nil)}
}

func urls(calls []checks.Call[*nse]) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Record.GetUrl())
	}
	return out
}

func TestFactoryReentersWithValuesOfLastRegister(t *testing.T) {
	back := newBehind()
	chain := next.Chain(begin.NewNSE(), back.chain())

	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "first"))
	got, err := chain.Register(ctx, &nse{Name: "a", Url: "tcp://[::1]:5000"})
	require.NoError(t, err)
	require.Equal(t, []string{"registry"}, got.GetPathIds())
	cancel() // the caller is gone; background events must not depend on its cancel

	factory, _ := back.grab.get()
	require.NotNil(t, factory)
	require.NoError(t, factory.Register(context.Background(), &nse{Name: "a", Url: "tcp://127.0.0.1:5000"}))
	require.NoError(t, factory.Unregister(context.Background()))
	require.ErrorIs(t, factory.Register(context.Background(), &nse{Name: "a"}), begin.ErrForgotten)
	require.ErrorIs(t, factory.Unregister(context.Background()), begin.ErrForgotten)

	require.Equal(t, []string{"tcp://[::1]:5000", "tcp://127.0.0.1:5000"}, urls(back.rec.Registers()))
	unregistered := back.rec.Unregisters()
	require.Equal(t, []string{"tcp://127.0.0.1:5000"}, urls(unregistered))
	require.Equal(t, []string{"registry"}, unregistered[0].Record.GetPathIds(), "the record as last registered, not as given")
	_, values := back.grab.get()
	require.Equal(t, []any{"first", "first", "first"}, values)
	back.grab.mu.Lock()
	require.Equal(t, []bool{false, true, true}, back.grab.backgrounds, "the factory's events are marked, the caller's not")
	back.grab.mu.Unlock()

	err = factory.Register(context.Background(), &nse{Name: "b"})
	require.Equal(t, codes.Internal, status.Code(err), "a factory serves its own name only")
}

func TestFailedFirstRegisterIsForgotten(t *testing.T) {
	boom := status.Error(codes.Unavailable, "registry down")
	for _, tc := range []struct {
		name       string
		registered bool // a Register succeeded before the failing one
		want       error
	}{
		{"first Register fails", false, begin.ErrForgotten},
		{"a later Register fails", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			back := newBehind()
			chain := next.Chain(begin.NewNSE(), back.chain())
			if tc.registered {
				_, err := chain.Register(context.Background(), &nse{Name: "a"})
				require.NoError(t, err)
			}
			back.fail.FailRegisters(boom)
			_, err := chain.Register(context.Background(), &nse{Name: "a"})
			require.ErrorIs(t, err, boom)
			back.fail.FailRegisters(nil)
			factory, _ := back.grab.get()
			require.ErrorIs(t, factory.Unregister(context.Background()), tc.want)
		})
	}
}

func TestWithdrawnEventDoesNothing(t *testing.T) {
	o := &overlap{perName: map[string]int{}, hold: make(chan struct{})}
	back := newBehind()
	chain := next.Chain(begin.NewNSE(), next.NSE(o), back.chain())

	registered := make(chan struct{})
	go func() {
		defer close(registered)
		_, _ = chain.Register(context.Background(), &nse{Name: "a"})
	}()
	o.hold <- struct{}{}
	<-registered
	factory, _ := back.grab.get()

	// Hold the turn with a second Register, queue a background event behind it, withdraw it.
	second := make(chan struct{})
	go func() {
		defer close(second)
		_, _ = chain.Register(context.Background(), &nse{Name: "a"})
	}()
	require.Eventually(t, func() bool { return o.total.Load() == 1 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	withdrawn := make(chan error, 1)
	go func() { withdrawn <- factory.Unregister(ctx) }()
	cancel()
	o.hold <- struct{}{}
	require.ErrorIs(t, <-withdrawn, context.Canceled)
	<-second

	require.Len(t, back.rec.Registers(), 2)
	require.Empty(t, back.rec.Unregisters(), "the withdrawn Unregister never ran")
}

// cancelInside cancels the context of the background event passing through it, as an element
// replacing its own state would.
type cancelInside struct {
	cancel atomic.Pointer[context.CancelFunc]
}

func (c *cancelInside) Register(ctx context.Context, r *nse) (*nse, error) {
	if f := c.cancel.Load(); f != nil {
		(*f)()
	}
	return next.Of[*nse](ctx).Register(ctx, r)
}

func (c *cancelInside) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

func (c *cancelInside) Unregister(ctx context.Context, r *nse) error {
	return next.Of[*nse](ctx).Unregister(ctx, r)
}

// deadline reports whether the event context it sees is cancelled and has a deadline.
type deadline struct{ cancelled, bounded atomic.Bool }

func (d *deadline) Register(ctx context.Context, r *nse) (*nse, error) {
	d.cancelled.Store(ctx.Err() != nil)
	_, ok := ctx.Deadline()
	d.bounded.Store(ok)
	return r, nil
}

func (d *deadline) Find(context.Context, *next.Query[*nse], func(*next.Event[*nse]) error) error {
	return nil
}

func (d *deadline) Unregister(context.Context, *nse) error { return nil }

func TestRunningEventIsBoundByDeadlineOnly(t *testing.T) {
	g, inside, d := &grabber{}, &cancelInside{}, &deadline{}
	chain := next.Chain(begin.NewNSE(), next.NSE(g), next.NSE(inside), next.NSE(d))
	_, err := chain.Register(context.Background(), &nse{Name: "a"})
	require.NoError(t, err)
	factory, _ := g.get()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inside.cancel.Store(&cancel)
	require.NoError(t, factory.Register(ctx, &nse{Name: "a"}))
	require.False(t, d.cancelled.Load(), "cancelling a running event's context does not stop it")
	require.True(t, d.bounded.Load(), "the deadline still bounds it")
}

func TestNamesAndFind(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(next.NS) error
		want codes.Code
	}{
		{"Register without name", func(c next.NS) error {
			_, err := c.Register(context.Background(), &registry.NetworkService{Payload: "IP"})
			return err
		}, codes.InvalidArgument},
		{"Unregister without name", func(c next.NS) error {
			return c.Unregister(context.Background(), &registry.NetworkService{})
		}, codes.InvalidArgument},
		{"NS Register", func(c next.NS) error {
			_, err := c.Register(context.Background(), &registry.NetworkService{Name: "icmp"})
			return err
		}, codes.OK},
		{"Find passes through", func(c next.NS) error {
			return c.Find(context.Background(), &next.Query[*registry.NetworkService]{}, func(*next.Event[*registry.NetworkService]) error {
				return errors.New("nothing expected")
			})
		}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, status.Code(tc.call(begin.NewNS())))
		})
	}
	store := memory.NewNSE()
	_, err := store.Register(context.Background(), &nse{Name: "found"})
	require.NoError(t, err)
	var found []string
	require.NoError(t, next.Chain(begin.NewNSE(), store).Find(context.Background(), &next.Query[*nse]{},
		func(ev *next.Event[*nse]) error { found = append(found, ev.Record.GetName()); return nil }))
	require.Equal(t, []string{"found"}, found)
}

func TestWaitForTurnEndsWithContext(t *testing.T) {
	o := &overlap{perName: map[string]int{}, hold: make(chan struct{})}
	chain := next.Chain(begin.NewNSE(), next.NSE(o))
	go func() { _, _ = chain.Register(context.Background(), &nse{Name: "a"}) }()
	require.Eventually(t, func() bool { return o.total.Load() == 1 }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := chain.Register(ctx, &nse{Name: "a"})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, chain.Unregister(ctx, &nse{Name: "a"}), context.Canceled)
	o.hold <- struct{}{}
}
