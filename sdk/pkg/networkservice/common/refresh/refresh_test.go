package refresh_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/refresh"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hop plays updatetoken and the next hop: it gives this hop's segment a token that lives
// lifetime on the fake clock, and records when each Request came.
type hop struct {
	clock    *clock.Fake
	lifetime time.Duration

	mu   sync.Mutex
	at   []time.Duration // since start, of each Request that reached it
	fail error
	t0   time.Time
}

func (h *hop) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	h.mu.Lock()
	h.at = append(h.at, h.clock.Since(h.t0))
	fail := h.fail
	h.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	if h.lifetime > 0 {
		req.GetConnection().GetCurrentPathSegment().Expires = timestamppb.New(h.clock.Now().Add(h.lifetime))
	}
	return next.Server(ctx).Request(ctx, req)
}

func (h *hop) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func (h *hop) requests() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Duration(nil), h.at...)
}

func (h *hop) failWith(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = err
}

// setup returns a client chain [begin, metadata, refresh, hop] whose hop gives tokens of
// lifetime, and a context with its fake clock.
func setup(t *testing.T, lifetime time.Duration) (context.Context, *clock.Fake, *hop, networkservice.NetworkServiceClient) {
	fake := clock.NewFake(time.Now())
	h := &hop{clock: fake, lifetime: lifetime, t0: fake.Now()}
	ctx, cancel := context.WithCancel(clock.WithClock(context.Background(), fake))
	t.Cleanup(cancel)
	c := next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), refresh.NewClient(ctx), adapters.NewServerToClient(h))
	return ctx, fake, h, c
}

func request(index, n int) *networkservice.NetworkServiceRequest {
	path := &networkservice.Path{Index: uint32(index)}
	for i := range n {
		path.PathSegments = append(path.PathSegments, &networkservice.PathSegment{Name: string(rune('a' + i)), Id: string(rune('a' + i))})
	}
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: path.GetPathSegments()[index].GetId(), Path: path}}
}

// step advances the fake clock and lets every timer it fired run to the end.
func step(fake *clock.Fake, d time.Duration) {
	fake.Advance(d)
	synctest.Wait()
}

func TestRefreshesBeforeEachExpiry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		index, n int
		every    time.Duration // of a 60s lifetime
	}{
		{name: "client, first of one", index: 0, n: 1, every: 15 * time.Second},
		{name: "first of four", index: 0, n: 4, every: 15 * time.Second},
		{name: "third of four", index: 2, n: 4, every: 18 * time.Second},
		{name: "last of five", index: 4, n: 5, every: 19800 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, fake, h, c := setup(t, time.Minute)
				_, err := c.Request(ctx, request(tc.index, tc.n))
				require.NoError(t, err)

				want := []time.Duration{0}
				for range 4 { // several lifetimes' worth
					step(fake, tc.every-time.Millisecond)
					require.Equal(t, want, h.requests(), "refreshed early")
					step(fake, time.Millisecond)
					want = append(want, want[len(want)-1]+tc.every)
					require.Equal(t, want, h.requests())
				}

				_, err = c.Close(ctx, request(tc.index, tc.n).GetConnection())
				require.NoError(t, err)
				require.Zero(t, fake.Pending(), "Close stops the timer")
				step(fake, time.Hour)
				require.Len(t, h.requests(), len(want), "no refresh after Close")
			})
		})
	}
}

func TestNewRequestReplacesTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, fake, h, c := setup(t, time.Minute)
		_, err := c.Request(ctx, request(0, 1))
		require.NoError(t, err)
		step(fake, 10*time.Second)
		_, err = c.Request(ctx, request(0, 1))
		require.NoError(t, err)
		require.Equal(t, 1, fake.Pending())

		step(fake, 14*time.Second) // the first timer would have gone off at 15s
		require.Equal(t, []time.Duration{0, 10 * time.Second}, h.requests())
		step(fake, time.Second)
		require.Equal(t, []time.Duration{0, 10 * time.Second, 25 * time.Second}, h.requests())
	})
}

func TestFailedRefreshIsTriedAgainUntilExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, fake, h, c := setup(t, time.Minute)
		_, err := c.Request(ctx, request(0, 1))
		require.NoError(t, err)
		h.failWith(status.Error(codes.Unavailable, "next hop down"))

		for range 5 {
			step(fake, 15*time.Second)
		}
		// Tries at 15, 30 and 45s; one at 60s would come with the expiry, too late to help.
		require.Equal(t, []time.Duration{0, 15 * time.Second, 30 * time.Second, 45 * time.Second}, h.requests())
		require.Zero(t, fake.Pending())
	})
}

func TestFailedRefreshThenSuccessRestartsSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, fake, h, c := setup(t, time.Minute)
		_, err := c.Request(ctx, request(0, 1))
		require.NoError(t, err)
		h.failWith(status.Error(codes.Unavailable, "next hop down"))
		step(fake, 15*time.Second)
		h.failWith(nil)
		step(fake, 15*time.Second) // succeeds at 30s: token until 90s, next at 45s
		step(fake, 15*time.Second)
		require.Equal(t, []time.Duration{0, 15 * time.Second, 30 * time.Second, 45 * time.Second}, h.requests())
	})
}

func TestFailedForegroundRequestKeepsTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, fake, h, c := setup(t, time.Minute)
		_, err := c.Request(ctx, request(0, 1))
		require.NoError(t, err)
		step(fake, 5*time.Second)
		h.failWith(status.Error(codes.Unavailable, "next hop down"))
		_, err = c.Request(ctx, request(0, 1))
		require.Error(t, err)
		h.failWith(nil)
		step(fake, 10*time.Second)
		require.Equal(t, []time.Duration{0, 5 * time.Second, 15 * time.Second}, h.requests())
	})
}

func TestNoExpiryNoRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, fake, h, c := setup(t, 0)
		_, err := c.Request(ctx, request(0, 1))
		require.NoError(t, err)
		require.Zero(t, fake.Pending())
		step(fake, time.Hour)
		require.Len(t, h.requests(), 1)
	})
}

func TestExpiredTokenIsNotRefreshed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, fake, h, c := setup(t, -time.Second)
		_, err := c.Request(ctx, request(0, 1))
		require.NoError(t, err)
		require.Zero(t, fake.Pending(), "no refresh storm for a token that is already dead")
		step(fake, time.Hour)
		require.Len(t, h.requests(), 1)
	})
}

func TestStopsWithChainContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := clock.NewFake(time.Now())
		h := &hop{clock: fake, lifetime: time.Minute, t0: fake.Now()}
		chainCtx, stop := context.WithCancel(context.Background())
		c := next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), refresh.NewClient(chainCtx), adapters.NewServerToClient(h))
		ctx := clock.WithClock(context.Background(), fake)
		_, err := c.Request(ctx, request(0, 1))
		require.NoError(t, err)
		stop()
		step(fake, time.Hour)
		require.Len(t, h.requests(), 1)
	})
}

func TestNeedsBegin(t *testing.T) {
	c := next.NewNetworkServiceClient(metadata.NewClient(), refresh.NewClient(context.Background()), adapters.NewServerToClient(&hop{clock: clock.NewFake(time.Now()), lifetime: time.Minute}))
	require.PanicsWithValue(t, "refresh: no begin before this element in the chain", func() {
		_, _ = c.Request(context.Background(), request(0, 1))
	})
}

// expiring gives each request's current segment a token that lives a minute on the clock of
// the request's context.
type expiring struct{}

func (expiring) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	req.GetConnection().GetCurrentPathSegment().Expires = timestamppb.New(clock.FromContext(ctx).Now().Add(time.Minute))
	return next.Server(ctx).Request(ctx, req)
}

func (expiring) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Case{
		Name:    "refresh",
		Client:  refresh.NewClient,
		Request: func() *networkservice.NetworkServiceRequest { return request(0, 1) },
		Before:  []networkservice.NetworkServiceServer{expiring{}},
	})
}
