package heal_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
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
	"vwire.dev/sdk/pkg/registry/utils/checks"
	"vwire.dev/sdk/pkg/registry/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

// registryAt serves fresh memory stores on the unix socket path until the returned stop.
func registryAt(t *testing.T, path string) (stop func()) { return serveAt(t, path, memory.NewNSE()) }

// serveAt serves endpoints, and a fresh store of services, on the unix socket path until the
// returned stop.
func serveAt(t *testing.T, path string, endpoints next.NSE) (stop func()) {
	lis, err := net.Listen("unix", path)
	require.NoError(t, err)
	srv := grpc.NewServer()
	registry.RegisterNetworkServiceEndpointRegistryServer(srv, adapters.NSEServer(endpoints))
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

// watch watches every endpoint through e until ctx ends: the events arrive on the returned
// channel, the watch's end on done.
func watch(ctx context.Context, e next.NSE, done chan<- error) <-chan *event {
	events := make(chan *event, 100)
	go func() {
		done <- e.Find(ctx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(ev *event) error {
			events <- ev
			return nil
		})
	}()
	return events
}

// socket returns a unix socket path in a fresh short folder and a connection to it that redials
// quickly, both removed when the test ends.
func socket(t *testing.T) (string, *grpc.ClientConn) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "registry.sock")
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond}}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return path, cc
}

func TestRegistryRestartOverGRPC(t *testing.T) {
	path, cc := socket(t)
	stop := registryAt(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	healing := next.Chain(begin.NewNSE(), heal.NewNSE(ctx), connect.NewNSE(cc)) // the endpoint with heal
	plain := connect.NewNSE(cc)                                                 // another client, without
	services := next.Chain(begin.NewNS(), heal.NewNS(ctx), connect.NewNS(cc))

	_, err := healing.Register(ctx, &nse{Name: "nse-a", Url: "tcp://127.0.0.1:5000", NetworkServiceNames: []string{"icmp"}})
	require.NoError(t, err)
	_, err = plain.Register(ctx, &nse{Name: "nse-b", Url: "tcp://[::1]:5000", NetworkServiceNames: []string{"icmp"}})
	require.NoError(t, err)
	_, err = services.Register(ctx, &registry.NetworkService{Name: "icmp", Payload: "IP"})
	require.NoError(t, err)

	watchCtx, endWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 2)
	events := watch(watchCtx, healing, watchDone)
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

// TestWatchHealsWhenTheRegistryDies breaks a watch the way a dying registry does, then serves a
// new registry on the same socket: the watcher goes on with the new registry's changes. A
// registry that stops answers Unavailable; one whose stream handler ends with Canceled (a
// proxy passing on the cancel of its own upstream call, a handler returning its cancelled
// context's error) answers Canceled, while the watcher's own context is alive: heal must tell
// that from the caller's cancel.
func TestWatchHealsWhenTheRegistryDies(t *testing.T) {
	for _, tc := range []struct {
		name string
		die  func(fail *inject.Errors[*nse], stop func())
		want codes.Code // what the client sees when its watch breaks
	}{
		{"the server stops", func(_ *inject.Errors[*nse], stop func()) { stop() }, codes.Unavailable},
		{"a stream handler ends with Canceled", func(fail *inject.Errors[*nse], _ func()) {
			fail.FailFinds(status.Error(codes.Canceled, "registry: shutting down"))
		}, codes.Canceled},
		{"a stream handler ends with its context's error", func(fail *inject.Errors[*nse], _ func()) {
			fail.FailFinds(context.Canceled)
		}, codes.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, cc := socket(t)
			fail := inject.NewNSE(nil)
			stop := serveAt(t, path, next.Chain(next.NSE(fail), memory.NewNSE()))
			defer func() { stop() }()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			rec := checks.NewNSE() // what heal sees of the registry
			healing := next.Chain(begin.NewNSE(), heal.NewNSE(ctx, heal.WithBackoff(5*time.Millisecond, 50*time.Millisecond)), next.NSE(rec), connect.NewNSE(cc))
			plain := connect.NewNSE(cc)
			_, err := healing.Register(ctx, &nse{Name: "nse-a", Url: "tcp://127.0.0.1:5000"})
			require.NoError(t, err)

			watchCtx, endWatch := context.WithCancel(ctx)
			watchDone := make(chan error, 1)
			events := watch(watchCtx, healing, watchDone)
			require.Equal(t, []string{"nse-a"}, names([]*event{<-events}))

			tc.die(fail, stop)
			require.Eventually(t, func() bool {
				return slices.ContainsFunc(rec.Finds(), func(c checks.Call[*nse]) bool { return c.Watch && status.Code(c.Err) == tc.want })
			}, 10*time.Second, time.Millisecond, "the client saw its watch break with %v", tc.want)
			stop() // whatever is left of the old registry goes; a new one comes up empty
			stop = registryAt(t, path)

			require.Eventually(t, func() bool {
				_, err := plain.Register(ctx, &nse{Name: "nse-b", Url: "tcp://[::1]:5000"})
				return err == nil
			}, 10*time.Second, 10*time.Millisecond)
			select {
			case ev := <-events:
				require.Equal(t, []string{"nse-b"}, names([]*event{ev}), "the watcher sees the new registry's changes, and not nse-a again")
			case err := <-watchDone:
				t.Fatalf("heal gave the watch up: %v", err)
			}
			_, err = plain.Register(ctx, &nse{Name: "nse-c", Url: "unix:///run/vw/nse-c.sock"})
			require.NoError(t, err)
			require.Equal(t, []string{"nse-c"}, names([]*event{<-events}), "later changes come through the re-opened watch")
			endWatch()
			require.Error(t, <-watchDone, "the caller's own cancel ends the watch")
		})
	}
}

var start = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func TestFailedRefreshIsRetriedWithBackoff(t *testing.T) {
	for _, down := range []error{
		status.Error(codes.Unavailable, "registry down"),
		status.Error(codes.Canceled, "registry: shutting down"), // a dying registry; heal's context is alive
	} {
		for _, tc := range []struct {
			name string
			end  func(ctx context.Context, chain next.NSE, stopHeal context.CancelFunc)
			left int // timers left at the end: the registry's expiry, the next refresh
		}{
			{"until the registry is back", func(context.Context, next.NSE, context.CancelFunc) {}, 2},
			{"until Unregister", func(ctx context.Context, chain next.NSE, _ context.CancelFunc) {
				require.NoError(t, chain.Unregister(ctx, &nse{Name: "nse-1"}))
			}, 0},
			{"until heal's context ends", func(_ context.Context, _ next.NSE, stopHeal context.CancelFunc) { stopHeal() }, 1},
		} {
			t.Run(status.Code(down).String()+" "+tc.name, func(t *testing.T) {
				fake := clock.NewFake(start)
				ctx := clock.WithClock(context.Background(), fake)
				healCtx, stopHeal := context.WithCancel(ctx)
				defer stopHeal()
				rec, fail, store := checks.NewNSE(), inject.NewNSE(nil), memory.NewNSE()
				chain := next.Chain(begin.NewNSE(), heal.NewNSE(healCtx), refresh.NewNSE(healCtx), next.NSE(rec), next.NSE(fail),
					begin.NewNSE(), expire.NewNSE(), store)
				_, err := chain.Register(ctx, &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
				require.NoError(t, err)
				attempts := func() int { return len(rec.Registers()) }

				fail.FailRegisters(down)
				fake.Advance(20 * time.Second) // the refresh fails
				// Pending: the registry's expiry and heal's retry.
				waitPending := func(n int) {
					require.Eventually(t, func() bool { return fake.Pending() == n }, 5*time.Second, time.Millisecond)
				}
				waitPending(2)
				require.Equal(t, 2, attempts())
				for i, wait := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond} {
					fake.Advance(wait - time.Millisecond)
					require.Equal(t, 2+i, attempts(), "retry %d came early", i)
					fake.Advance(time.Millisecond)
					waitPending(2)
					require.Equal(t, 3+i, attempts())
				}
				tc.end(ctx, chain, stopHeal)
				fail.FailRegisters(nil)
				fake.Advance(400 * time.Millisecond)
				waitPending(tc.left)
				if tc.left < 2 {
					require.Equal(t, 5, attempts(), "no more retries")
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
}

func TestWatch(t *testing.T) {
	boom := status.Error(codes.PermissionDenied, "no")
	for _, tc := range []struct {
		name  string
		fails error // how the registry's watches fail, until it is mended
		want  error // how the caller's Find ends; nil: it goes on
	}{
		{"reopened after Unavailable", status.Error(codes.Unavailable, "connection reset"), nil},
		{"reopened after the registry's Canceled", status.Error(codes.Canceled, "registry: shutting down"), nil},
		{"other errors end it", boom, boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			store, rec, fail := memory.NewNSE(), checks.NewNSE(), inject.NewNSE(nil)
			_, err := store.Register(ctx, &nse{Name: "a", Url: "tcp://[::1]:5000"})
			require.NoError(t, err)
			fail.FailFinds(tc.fails)
			chain := next.Chain(heal.NewNSE(ctx, heal.WithBackoff(time.Millisecond, 4*time.Millisecond)), next.NSE(rec), next.NSE(fail), store)
			done := make(chan error, 1)
			events := watch(ctx, chain, done)
			if tc.want != nil {
				require.ErrorIs(t, <-done, tc.want)
				require.Len(t, rec.Finds(), 1, "not opened again")
				return
			}
			require.Eventually(t, func() bool { return len(rec.Finds()) > 3 }, 5*time.Second, time.Millisecond, "heal tries again")
			fail.FailFinds(nil)
			require.Equal(t, "a", (<-events).Record.GetName())
			fail.FailFinds(tc.fails) // the standing watch breaks too
			_, err = store.Register(ctx, &nse{Name: "b", Url: "tcp://127.0.0.1:5000"})
			require.NoError(t, err)
			fail.FailFinds(nil)
			require.Equal(t, "b", (<-events).Record.GetName())
			cancel()
			<-done // the caller's cancel ends it, whatever heal was doing
			require.Empty(t, events, "each record came once, however often the watch was opened")
		})
	}
}

func TestSendErrorEndsWatch(t *testing.T) {
	stop := status.Error(codes.Unavailable, "the caller's stream broke")
	store, rec := memory.NewNSE(), checks.NewNSE()
	_, err := store.Register(context.Background(), &nse{Name: "a"})
	require.NoError(t, err)
	chain := next.Chain(heal.NewNSE(context.Background()), next.NSE(rec), store)
	err = chain.Find(context.Background(), &next.Query[*nse]{Record: &nse{}, Watch: true}, func(*event) error { return stop })
	require.ErrorIs(t, err, stop, "the caller's own error is not healed")
	require.Len(t, rec.Finds(), 1)
}

func TestNeedsBegin(t *testing.T) {
	_, err := next.Chain(heal.NewNSE(context.Background()), memory.NewNSE()).Register(context.Background(), &nse{Name: "a"})
	require.Equal(t, codes.Internal, status.Code(err))
}
