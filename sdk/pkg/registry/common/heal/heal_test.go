package heal_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/connect"
	"vwire.dev/sdk/pkg/registry/common/expire"
	"vwire.dev/sdk/pkg/registry/common/heal"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/refresh"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

// registryAt serves fresh memory stores on the unix socket path until the returned stop.
func registryAt(t *testing.T, path string) (stop func()) {
	lis, err := net.Listen("unix", path)
	require.NoError(t, err)
	srv := grpc.NewServer()
	registry.RegisterNetworkServiceEndpointRegistryServer(srv, adapters.NSEServer(memory.NewNSE()))
	registry.RegisterNetworkServiceRegistryServer(srv, adapters.NSServer(memory.NewNS()))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	return func() { srv.Stop(); <-done }
}

func names(events []*event) []string {
	var out []string
	for _, ev := range events {
		s := ev.Record.GetName()
		if ev.Deleted {
			s = "-" + s
		}
		out = append(out, s)
	}
	return out
}

func TestRegistryRestartOverGRPC(t *testing.T) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	defer func() { _ = os.RemoveAll(dir) }()
	path := filepath.Join(dir, "registry.sock")
	stop := registryAt(t, path)

	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond}}))
	require.NoError(t, err)
	defer func() { _ = cc.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	healing := next.Chain(begin.NewNSE(), heal.NewNSE(ctx), connect.NewNSE(cc)) // the endpoint with heal
	plain := connect.NewNSE(cc)                                                 // another client, without
	services := next.Chain(begin.NewNS(), heal.NewNS(ctx), connect.NewNS(cc))

	_, err = healing.Register(ctx, &nse{Name: "nse-a", Url: "tcp://127.0.0.1:5000", NetworkServiceNames: []string{"icmp"}})
	require.NoError(t, err)
	_, err = plain.Register(ctx, &nse{Name: "nse-b", Url: "tcp://[::1]:5000", NetworkServiceNames: []string{"icmp"}})
	require.NoError(t, err)
	_, err = services.Register(ctx, &registry.NetworkService{Name: "icmp", Payload: "IP"})
	require.NoError(t, err)

	watchCtx, endWatch := context.WithCancel(ctx)
	events, watchDone := make(chan *event, 100), make(chan error, 2)
	go func() {
		watchDone <- healing.Find(watchCtx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(ev *event) error {
			events <- ev
			return nil
		})
	}()
	nsBack := make(chan struct{}, 1)
	go func() { // a watch of services, which brings the service's registration back
		watchDone <- services.Find(watchCtx, &next.Query[*registry.NetworkService]{Record: &registry.NetworkService{}, Watch: true},
			func(ev *next.Event[*registry.NetworkService]) error {
				if ev.Record.GetName() == "icmp" && !ev.Deleted {
					select {
					case nsBack <- struct{}{}:
					default:
					}
				}
				return nil
			})
	}()
	require.Equal(t, []string{"nse-a", "nse-b"}, names([]*event{<-events, <-events}))
	<-nsBack

	stop() // the registry restarts with nothing
	stop = registryAt(t, path)
	defer func() { stop() }()

	// Another client registers on the new registry once its connection is back.
	require.Eventually(t, func() bool {
		_, err := plain.Register(ctx, &nse{Name: "nse-c", Url: "unix:///run/vw/nse-c.sock", NetworkServiceNames: []string{"icmp"}})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)

	require.Equal(t, []string{"-nse-b", "nse-c"}, names([]*event{<-events, <-events}),
		"the watcher learns what vanished and what is new, and does not see nse-a again")

	var found []string
	require.NoError(t, plain.Find(ctx, &next.Query[*nse]{Record: &nse{}}, func(ev *event) error {
		found = append(found, ev.Record.GetName())
		return nil
	}))
	require.Equal(t, []string{"nse-a", "nse-c"}, found, "the healed registration came back, the other did not")
	require.Eventually(t, func() bool {
		var services []string
		err := connect.NewNS(cc).Find(ctx, &next.Query[*registry.NetworkService]{Record: &registry.NetworkService{}},
			func(ev *next.Event[*registry.NetworkService]) error {
				services = append(services, ev.Record.GetName())
				return nil
			})
		return err == nil && len(services) == 1 && services[0] == "icmp"
	}, 10*time.Second, 10*time.Millisecond, "the service came back too, when its watch healed")

	// Changes reach the watcher once the re-opened watch stands (a deletion in the instant before
	// it does would be missed: see the package comment).
	_, err = plain.Register(ctx, &nse{Name: "nse-d", Url: "tcp://[fd00::4]:5000"})
	require.NoError(t, err)
	require.Equal(t, []string{"nse-d"}, names([]*event{<-events}))
	require.NoError(t, healing.Unregister(ctx, &nse{Name: "nse-a"}))
	require.Equal(t, []string{"-nse-a"}, names([]*event{<-events}))
	endWatch()
	require.Error(t, <-watchDone)
	require.Error(t, <-watchDone)
}

var start = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// gate refuses Registers with Unavailable while closed, and counts them.
type gate struct {
	closed   atomic.Bool
	attempts atomic.Int32
}

func (g *gate) Register(ctx context.Context, r *nse) (*nse, error) {
	g.attempts.Add(1)
	if g.closed.Load() {
		return nil, status.Error(codes.Unavailable, "registry down")
	}
	return next.Of[*nse](ctx).Register(ctx, r)
}

func (g *gate) Find(ctx context.Context, q *next.Query[*nse], send func(*event) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

func (g *gate) Unregister(ctx context.Context, r *nse) error {
	return next.Of[*nse](ctx).Unregister(ctx, r)
}

func TestFailedRefreshIsRetriedWithBackoff(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(ctx context.Context, chain next.NSE, stopHeal context.CancelFunc, g *gate)
		left int // timers left at the end: the registry's expiry, the next refresh
	}{
		{"until the registry is back", func(context.Context, next.NSE, context.CancelFunc, *gate) {}, 2},
		{"until Unregister", func(ctx context.Context, chain next.NSE, _ context.CancelFunc, g *gate) {
			g.closed.Store(false)
			require.NoError(t, chain.Unregister(ctx, &nse{Name: "nse-1"}))
			g.closed.Store(true)
		}, 0},
		{"until heal's context ends", func(_ context.Context, _ next.NSE, stopHeal context.CancelFunc, _ *gate) { stopHeal() }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := clock.NewFake(start)
			ctx := clock.WithClock(context.Background(), fake)
			healCtx, stopHeal := context.WithCancel(ctx)
			defer stopHeal()
			g, store := &gate{}, memory.NewNSE()
			chain := next.Chain(begin.NewNSE(), heal.NewNSE(healCtx), refresh.NewNSE(healCtx), next.NSE(g),
				begin.NewNSE(), expire.NewNSE(), store)
			_, err := chain.Register(ctx, &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
			require.NoError(t, err)

			g.closed.Store(true)
			fake.Advance(20 * time.Second) // the refresh fails
			// Pending: the registry's expiry and heal's retry.
			waitPending := func(n int) {
				require.Eventually(t, func() bool { return fake.Pending() == n }, 5*time.Second, time.Millisecond)
			}
			waitPending(2)
			require.Equal(t, int32(2), g.attempts.Load())
			for i, wait := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond} {
				fake.Advance(wait - time.Millisecond)
				require.Equal(t, int32(2+i), g.attempts.Load(), "retry %d came early", i)
				fake.Advance(time.Millisecond)
				waitPending(2)
				require.Equal(t, int32(3+i), g.attempts.Load())
			}
			tc.end(ctx, chain, stopHeal, g)
			g.closed.Store(false)
			fake.Advance(400 * time.Millisecond)
			waitPending(tc.left)
			if tc.left < 2 {
				require.Equal(t, int32(5), g.attempts.Load(), "no more retries")
				return
			}
			var exp []time.Time
			require.NoError(t, store.Find(ctx, &next.Query[*nse]{Record: &nse{Name: "nse-1"}}, func(ev *event) error {
				exp = append(exp, ev.Record.GetExpirationTime().AsTime())
				return nil
			}))
			require.Equal(t, []time.Time{fake.Now().Add(time.Minute)}, exp, "registered again, with a new lifetime")
		})
	}
}

// breaker plays a registry whose watches break with Unavailable until it is mended; then it
// answers with the records it is given.
type breaker struct {
	records []*nse
	broken  atomic.Int32 // how many more watch opens fail
	opens   atomic.Int32
	other   error // when set, every Find fails with it
}

func (b *breaker) Register(ctx context.Context, r *nse) (*nse, error) { return r, nil }

func (b *breaker) Unregister(context.Context, *nse) error { return nil }

func (b *breaker) Find(ctx context.Context, q *next.Query[*nse], send func(*event) error) error {
	if b.other != nil {
		return b.other
	}
	if q.Watch {
		b.opens.Add(1)
	}
	if b.broken.Add(-1) >= 0 {
		return status.Error(codes.Unavailable, "connection reset")
	}
	for _, r := range b.records {
		if err := send(&event{Record: r.Clone()}); err != nil {
			return err
		}
	}
	if q.Watch {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return nil
}

func TestWatch(t *testing.T) {
	boom := status.Error(codes.PermissionDenied, "no")
	for _, tc := range []struct {
		name   string
		broken int32
		other  error
		want   error
	}{
		{"reopened after failures", 5, nil, nil},
		{"other errors end it", 0, boom, boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b := &breaker{records: []*nse{{Name: "a", Url: "tcp://[::1]:5000"}}, other: tc.other}
			b.broken.Store(tc.broken)
			chain := next.Chain(heal.NewNSE(ctx, heal.WithBackoff(time.Millisecond, 4*time.Millisecond)), next.NSE(b))
			events := make(chan *event, 10)
			err := make(chan error, 1)
			go func() {
				err <- chain.Find(ctx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(ev *event) error {
					events <- ev
					return nil
				})
			}()
			if tc.want != nil {
				require.ErrorIs(t, <-err, tc.want)
				return
			}
			require.Equal(t, "a", (<-events).Record.GetName())
			require.Eventually(t, func() bool { return b.opens.Load() > 1 && b.broken.Load() < 0 }, 5*time.Second, time.Millisecond)
			cancel()
			require.Error(t, <-err)
			require.Empty(t, events, "the record came once, however often the watch was opened")
		})
	}
}

func TestSendErrorEndsWatch(t *testing.T) {
	stop := status.Error(codes.Unavailable, "the caller's stream broke")
	b := &breaker{records: []*nse{{Name: "a"}}}
	chain := next.Chain(heal.NewNSE(context.Background()), next.NSE(b))
	err := chain.Find(context.Background(), &next.Query[*nse]{Record: &nse{}, Watch: true}, func(*event) error { return stop })
	require.ErrorIs(t, err, stop, "the caller's own error is not healed")
	require.Equal(t, int32(1), b.opens.Load())
}

func TestNeedsBegin(t *testing.T) {
	_, err := next.Chain(heal.NewNSE(context.Background()), memory.NewNSE()).Register(context.Background(), &nse{Name: "a"})
	require.Equal(t, codes.Internal, status.Code(err))
}
