package timeout_test

import (
	"context"
	"errors"
	"log/slog"
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
	"vwire.dev/sdk/pkg/networkservice/common/timeout"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var start = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// mesh is a server chain begin, metadata, timeout, then an injector and a recorder, on a fake
// clock. Tests run in a synctest bubble, so synctest.Wait() waits for the goroutine of a timer
// that fired to finish its work.
type mesh struct {
	fake  *clock.Fake
	fail  *inject.Errors
	rec   *checks.Recorder
	chain networkservice.NetworkServiceServer
	ctx   context.Context
}

func newMesh(component context.Context) *mesh {
	m := &mesh{fake: clock.NewFake(start), fail: inject.NewServer(nil), rec: checks.NewServer()}
	m.chain = next.NewNetworkServiceServer(begin.NewServer(), metadata.NewServer(), timeout.NewServer(component), m.fail, m.rec)
	m.ctx = log.WithLogger(clock.WithClock(context.Background(), m.fake), slog.New(slog.DiscardHandler))
	return m
}

// conn is a connection at the endpoint whose caller's token expires at expires: at index 1
// the caller is the client before it, whose segment expires then while the endpoint's own lasts
// an hour longer; at index 0 the endpoint is the first hop, alone in the path.
func conn(index uint32, expires time.Time) *networkservice.Connection {
	segs := []*networkservice.PathSegment{
		{Name: "nsc", Id: "nsc-1", Expires: timestamppb.New(expires)},
		{Name: "nse", Id: "conn-1", Expires: timestamppb.New(expires.Add(time.Hour))},
	}
	if index == 0 {
		segs = []*networkservice.PathSegment{{Name: "nse", Id: "conn-1", Expires: timestamppb.New(expires)}}
	}
	return &networkservice.Connection{Id: "conn-1", Path: &networkservice.Path{Index: index, PathSegments: segs}}
}

func (m *mesh) request(t *testing.T, c *networkservice.Connection) error {
	t.Helper()
	_, err := m.chain.Request(m.ctx, &networkservice.NetworkServiceRequest{Connection: c})
	synctest.Wait()
	return err
}

func (m *mesh) advance(d time.Duration) {
	m.fake.Advance(d)
	synctest.Wait()
}

func TestExpiredTokenCloses(t *testing.T) {
	tests := []struct {
		name  string
		index uint32
	}{
		{"the previous hop's token", 1},
		{"the first hop's own token", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newMesh(context.Background())
				require.NoError(t, m.request(t, conn(tt.index, start.Add(time.Minute))))
				require.Equal(t, 1, m.fake.Pending())

				m.advance(time.Minute - time.Nanosecond)
				require.Empty(t, m.rec.Closes(), "not before the token expires")
				m.advance(time.Nanosecond)
				require.Len(t, m.rec.Closes(), 1, "closed when the token expires")
				require.Empty(t, m.rec.Open())
				require.Zero(t, m.fake.Pending())
			})
		})
	}
}

func TestRefreshInTimeKeepsTheConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(context.Background())
		require.NoError(t, m.request(t, conn(1, start.Add(time.Minute))))
		m.advance(50 * time.Second)
		require.NoError(t, m.request(t, conn(1, start.Add(50*time.Second+time.Minute))), "refresh")
		require.Equal(t, 1, m.fake.Pending(), "the refresh replaced the timer")

		m.advance(30 * time.Second) // past the first token's expiry
		require.Empty(t, m.rec.Closes(), "a refreshed connection stays")
		m.advance(30 * time.Second) // past the refreshed token's expiry
		require.Len(t, m.rec.Closes(), 1)
	})
}

func TestCloseStopsTheTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(context.Background())
		require.NoError(t, m.request(t, conn(1, start.Add(time.Minute))))
		_, err := m.chain.Close(m.ctx, conn(1, start.Add(time.Minute)))
		require.NoError(t, err)
		require.Zero(t, m.fake.Pending(), "Close stopped the timer")
		m.advance(time.Hour)
		require.Len(t, m.rec.Closes(), 1, "only the caller's Close")
	})
}

func TestFailedRefreshKeepsTheOldTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(context.Background())
		require.NoError(t, m.request(t, conn(1, start.Add(time.Minute))))
		m.fail.FailRequests(status.Error(codes.Unavailable, "forwarder down"))
		require.Error(t, m.request(t, conn(1, start.Add(time.Hour))))
		require.Equal(t, 1, m.fake.Pending())

		m.advance(time.Minute)
		require.Len(t, m.rec.Closes(), 1, "the connection still times out on the token of its last successful Request")
	})
}

func TestFailedFirstRequestSchedulesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(context.Background())
		m.fail.FailRequests(errors.New("no endpoint"))
		require.Error(t, m.request(t, conn(1, start.Add(time.Minute))))
		require.Zero(t, m.fake.Pending())
	})
}

func TestComponentStopCancelsClosing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		component, stop := context.WithCancel(context.Background())
		m := newMesh(component)
		require.NoError(t, m.request(t, conn(1, start.Add(time.Minute))))
		stop()
		m.advance(time.Hour)
		require.Empty(t, m.rec.Closes(), "a stopped component closes nothing in the background")
	})
}

// gate holds Requests until released, so a test can fire the timer while a refresh is under way.
type gate struct {
	held    chan struct{}
	release chan struct{}
}

func (g *gate) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if g.held != nil {
		g.held <- struct{}{}
		<-g.release
	}
	return next.Server(ctx).Request(ctx, req)
}

func (g *gate) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestExpiryDuringARefreshYieldsToIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(context.Background())
		g := &gate{}
		m.chain = next.NewNetworkServiceServer(begin.NewServer(), metadata.NewServer(), timeout.NewServer(context.Background()), g, m.rec)
		require.NoError(t, m.request(t, conn(1, start.Add(time.Minute))))

		g.held, g.release = make(chan struct{}), make(chan struct{})
		done := make(chan error)
		go func() {
			_, err := m.chain.Request(m.ctx, &networkservice.NetworkServiceRequest{Connection: conn(1, start.Add(2*time.Minute))})
			done <- err
		}()
		<-g.held // the refresh holds the connection's turn
		m.advance(time.Minute)
		close(g.release)
		require.NoError(t, <-done)
		synctest.Wait()
		require.Empty(t, m.rec.Closes(), "the timer that fired during the refresh gave way to it")
		require.Equal(t, 1, m.fake.Pending())

		m.advance(time.Minute)
		require.Len(t, m.rec.Closes(), 1)
	})
}

func TestBadRequests(t *testing.T) {
	noExpires := conn(1, start)
	noExpires.GetPath().GetPathSegments()[0].Expires = nil
	tests := []struct {
		name  string
		conn  *networkservice.Connection
		code  codes.Code
		msg   string
		chain func(*mesh) networkservice.NetworkServiceServer
	}{
		{"caller without expires", noExpires, codes.InvalidArgument, "timeout: path segment 0 (nsc) has no expires", nil},
		{"index outside the path", &networkservice.Connection{Id: "x", Path: &networkservice.Path{Index: 1}}, codes.InvalidArgument,
			"timeout: path index 1 is outside the path of 0 segments", nil},
		{"no begin", conn(1, start.Add(time.Minute)), codes.Internal, "timeout: no begin before timeout in the chain",
			func(m *mesh) networkservice.NetworkServiceServer {
				return next.NewNetworkServiceServer(metadata.NewServer(), timeout.NewServer(context.Background()), m.rec)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMesh(context.Background())
			if tt.chain != nil {
				m.chain = tt.chain(m)
			}
			_, err := m.chain.Request(m.ctx, &networkservice.NetworkServiceRequest{Connection: tt.conn})
			require.Equal(t, tt.code, status.Code(err))
			require.ErrorContains(t, err, tt.msg)
			require.Empty(t, m.rec.Requests(), "nothing passes on")
			require.Zero(t, m.fake.Pending())
		})
	}
}
