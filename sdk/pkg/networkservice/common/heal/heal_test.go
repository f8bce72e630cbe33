package heal_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/heal"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/metrictest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// endpoint is a small NSE: [updatepath, begin, metadata, monitor, sinks, recorder], serving
// NetworkService and MonitorConnection on a unix socket.
type endpoint struct {
	rec   *checks.Recorder
	sinks *sinks
	away  *awayGate
	stop  func()
}

// awayGate fails every Request while it is set as a hop before the endpoint does while it
// restarts (dial.MarkHopAway), so the mark reaches the client in the status only.
type awayGate struct{ set atomic.Bool }

func (g *awayGate) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if g.set.Load() {
		return nil, dial.MarkHopAway(status.Error(codes.Unavailable, "the forwarder is restarting"))
	}
	return next.Server(ctx).Request(ctx, req)
}

func (g *awayGate) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// sinks keeps the monitor sink of each connection the endpoint saw.
type sinks struct {
	mu sync.Mutex
	m  map[string]func(*networkservice.Connection)
}

func (s *sinks) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	s.mu.Lock()
	s.m[req.GetConnection().GetId()] = monitor.Sink(ctx)
	s.mu.Unlock()
	return next.Server(ctx).Request(ctx, req)
}

func (s *sinks) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// report makes the endpoint's monitor say conn is in state.
func (s *sinks) report(conn *networkservice.Connection, state networkservice.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sink := range s.m {
		c := conn.Clone()
		c.State = state
		sink(c)
	}
}

func startEndpoint(t *testing.T, ctx context.Context, sock string) *endpoint {
	t.Helper()
	lis, err := net.Listen("unix", sock)
	require.NoError(t, err)
	e := &endpoint{rec: checks.NewServer(), sinks: &sinks{m: map[string]func(*networkservice.Connection){}}, away: &awayGate{}}
	mon := monitor.NewServer(ctx)
	srv := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(srv, next.NewNetworkServiceServer(
		updatepath.NewServer("nse-1"), begin.NewServer(), metadata.NewServer(), mon, e.sinks, e.away, e.rec))
	networkservice.RegisterMonitorConnectionServer(srv, mon)
	go func() { _ = srv.Serve(lis) }()
	e.stop = srv.Stop
	t.Cleanup(srv.Stop)
	return e
}

func socket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "nse.sock")
}

// newClient returns the client chain of a workload reaching the endpoint at sock, with a
// recorder right after heal that sees every Request heal lets through. Heal stops with
// healCtx, the rest of the chain with ctx. Dial and monitor keep nothing open after the last
// Close, so that the only timers on a fake clock are heal's.
func newClient(ctx, healCtx context.Context, sock string, opts ...heal.Option) (networkservice.NetworkServiceClient, *checks.Recorder) {
	rec := checks.NewServer()
	return next.NewNetworkServiceClient(
		updatepath.NewClient("nsc"),
		begin.NewClient(),
		metadata.NewClient(),
		heal.NewClient(healCtx, opts...),
		adapters.NewServerToClient(rec),
		clienturl.NewClient(&url.URL{Scheme: "unix", Path: sock}),
		dial.NewClient(ctx, dial.WithIdleTimeout(0)),
		monitor.NewClient(ctx, monitor.WithIdleTimeout(0)),
		connect.NewClient(),
	), rec
}

func request() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{
			Id:                         "nsc-1",
			NetworkService:             "ns",
			NetworkServiceEndpointName: "nse-1",
			Mechanism:                  &networkservice.Mechanism{Cls: "LOCAL", Type: "KERNEL"},
		},
		MechanismPreferences: []*networkservice.Mechanism{{Cls: "LOCAL", Type: "KERNEL"}},
	}
}

func TestHealsWhenEndpointRestartsOnSameSocket(t *testing.T) {
	for _, tc := range []struct {
		name        string
		failedTries int // tries that fail before the endpoint is back
	}{
		{name: "back at once", failedTries: 0},
		{name: "back after plain tries failed", failedTries: 2},
		{name: "back after reselection began", failedTries: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sock := socket(t)
			first := startEndpoint(t, ctx, sock)
			nsc, seen := newClient(ctx, ctx, sock)

			conn, err := nsc.Request(ctx, request())
			require.NoError(t, err)
			require.Len(t, first.rec.Open(), 1)

			first.stop()
			require.Eventually(t, func() bool { return len(seen.Requests()) >= 1+tc.failedTries }, 10*time.Second, time.Millisecond)
			back := time.Now()
			second := startEndpoint(t, ctx, sock)
			require.Eventually(t, func() bool { return len(second.rec.Open()) == 1 }, 10*time.Second, time.Millisecond,
				"the restarted endpoint never got the connection back")
			t.Logf("healed %v after the endpoint was back", time.Since(back))
			require.Less(t, time.Since(back), time.Second, "heal is slower than the goal")

			// The new endpoint is followed too: a DOWN from it heals again.
			before := len(second.rec.Requests())
			second.sinks.report(second.rec.Requests()[before-1].GetConnection(), networkservice.State_DOWN)
			require.Eventually(t, func() bool { return len(second.rec.Requests()) > before }, 10*time.Second, time.Millisecond)

			_, err = nsc.Close(ctx, conn)
			require.NoError(t, err)
			require.Empty(t, second.rec.Open())
		})
	}
}

func TestEveryConnectionOnTheLostHopHeals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sock := socket(t)
	first := startEndpoint(t, ctx, sock)
	nsc, _ := newClient(ctx, ctx, sock)

	var conns []*networkservice.Connection
	for _, id := range []string{"nsc-1", "nsc-2", "nsc-3"} {
		req := request()
		req.Connection.Id = id
		conn, err := nsc.Request(ctx, req)
		require.NoError(t, err)
		conns = append(conns, conn)
	}
	first.stop()
	second := startEndpoint(t, ctx, sock)
	require.Eventually(t, func() bool { return len(second.rec.Open()) == len(conns) }, 10*time.Second, time.Millisecond,
		"one stream to the endpoint broke, and every connection on it healed")
	for _, conn := range conns {
		_, err := nsc.Close(ctx, conn)
		require.NoError(t, err)
	}
	require.Empty(t, second.rec.Open())
}

func TestDownDuringTheRequestHealsAfterIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sock := socket(t)
	lis, err := net.Listen("unix", sock)
	require.NoError(t, err)
	nse := &downDuringRequest{held: make(chan *networkservice.Connection, 1), sent: make(chan struct{})}
	srv := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(srv, next.NewNetworkServiceServer(updatepath.NewServer("nse"), nse))
	networkservice.RegisterMonitorConnectionServer(srv, nse)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	// The first reply waits until the client's monitor stream has handled the DOWN (its second
	// event): its reader came back for a third. So the DOWN reaches heal before the Request ends.
	handled := make(chan struct{})
	var once sync.Once
	reads := grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		return &thirdRead{ClientStream: s, then: func() { once.Do(func() { close(handled) }) }}, err
	})
	seen := checks.NewServer()
	nsc := next.NewNetworkServiceClient(
		updatepath.NewClient("nsc"),
		begin.NewClient(),
		metadata.NewClient(),
		heal.NewClient(ctx),
		adapters.NewServerToClient(seen),
		clienturl.NewClient(&url.URL{Scheme: "unix", Path: sock}),
		dial.NewClient(ctx, dial.WithDialOptions(reads)),
		monitor.NewClient(ctx),
		adapters.NewServerToClient(&afterReply{wait: handled}),
		connect.NewClient(),
	)
	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return nse.requests.Load() == 2 }, 10*time.Second, time.Millisecond,
		"the DOWN that came during the first Request heals once it returned")
	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
}

// downDuringRequest is an endpoint whose monitor reports its first connection DOWN, after an
// empty initial state, before that connection's first Request returns.
type downDuringRequest struct {
	held     chan *networkservice.Connection
	sent     chan struct{}
	requests atomic.Int32
}

func (d *downDuringRequest) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if d.requests.Add(1) == 1 {
		down := req.GetConnection().Clone()
		down.State = networkservice.State_DOWN
		d.held <- down
		select {
		case <-d.sent:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return next.Server(ctx).Request(ctx, req)
}

func (d *downDuringRequest) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func (d *downDuringRequest) MonitorConnections(_ *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	if err := srv.Send(&networkservice.ConnectionEvent{Type: networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER}); err != nil {
		return err
	}
	select {
	case down := <-d.held:
		err := srv.Send(&networkservice.ConnectionEvent{
			Type:        networkservice.ConnectionEventType_UPDATE,
			Connections: map[string]*networkservice.Connection{down.GetId(): down},
		})
		close(d.sent)
		if err != nil {
			return err
		}
	case <-srv.Context().Done():
	}
	<-srv.Context().Done()
	return nil
}

// thirdRead calls then when its stream is read the third time.
type thirdRead struct {
	grpc.ClientStream
	reads int
	then  func()
}

func (s *thirdRead) RecvMsg(m any) error {
	if s.reads++; s.reads == 3 {
		s.then()
	}
	return s.ClientStream.RecvMsg(m)
}

// afterReply holds each reply until wait is closed.
type afterReply struct{ wait chan struct{} }

func (a *afterReply) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	select {
	case <-a.wait:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return conn, err
}

func (a *afterReply) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestDownEventReRequestsSameEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sock := socket(t)
	nse := startEndpoint(t, ctx, sock)
	nsc, seen := newClient(ctx, ctx, sock)

	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	nse.sinks.report(nse.rec.Requests()[0].GetConnection(), networkservice.State_DOWN)

	require.Eventually(t, func() bool { return len(nse.rec.Requests()) == 2 }, 10*time.Second, time.Millisecond)
	again := seen.Requests()[1].GetConnection()
	require.Equal(t, "nse-1", again.GetNetworkServiceEndpointName(), "a DOWN from a live hop keeps the endpoint")
	require.Equal(t, "KERNEL", again.GetMechanism().GetType())
	require.Equal(t, networkservice.State_UP, again.GetState())
	require.Empty(t, nse.rec.Closes(), "nothing is torn down")

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
}

func TestEndpointGoneAsksForReselection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sock := socket(t)
	nse := startEndpoint(t, ctx, sock)
	nsc, seen := newClient(ctx, ctx, sock, heal.WithReselectAfter(2))

	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	nse.stop()

	// Two plain tries, then reselection, and further tries with backoff.
	require.Eventually(t, func() bool { return len(seen.Requests()) >= 5 }, 10*time.Second, time.Millisecond)
	reqs := seen.Requests()
	for i, r := range reqs[:3] {
		require.Equal(t, "nse-1", r.GetConnection().GetNetworkServiceEndpointName(), "request %d", i)
	}
	for i, r := range reqs[3:] {
		c := r.GetConnection()
		require.Equal(t, networkservice.State_RESELECT_REQUESTED, c.GetState(), "request %d", i+3)
		require.Empty(t, c.GetNetworkServiceEndpointName(), "reselection lets discovery choose again")
		require.Nil(t, c.GetMechanism(), "reselection negotiates the mechanism again")
		require.Equal(t, "KERNEL", r.GetMechanismPreferences()[0].GetType(), "the preferences stay")
	}
	require.NotEmpty(t, seen.Closes(), "the old path is closed before reselecting")

	_, _ = nsc.Close(ctx, conn) // the endpoint is gone: Close cannot reach it, but stops healing
}

// TestFixedNextHopUnreachableIsTriedAgain: a workload's nsmgr restarts. While its socket is gone
// every try fails unreached, and none asks for reselection, which would tear down a path that
// still carries traffic; once it is back, the same request heals the connection, closing nothing.
func TestFixedNextHopUnreachableIsTriedAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sock := socket(t)
	first := startEndpoint(t, ctx, sock)
	nsc, seen := newClient(ctx, ctx, sock, heal.WithFixedNextHop(), heal.WithReselectAfter(2), heal.WithBackoff(time.Millisecond, 5*time.Millisecond))

	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	first.stop()
	require.Eventually(t, func() bool { return len(seen.Requests()) >= 8 }, 10*time.Second, time.Millisecond)
	second := startEndpoint(t, ctx, sock)
	require.Eventually(t, func() bool { return len(second.rec.Open()) == 1 }, 10*time.Second, time.Millisecond)

	for i, r := range seen.Requests() {
		require.NotEqual(t, networkservice.State_RESELECT_REQUESTED, r.GetConnection().GetState(), "request %d", i)
		require.Equal(t, "nse-1", r.GetConnection().GetNetworkServiceEndpointName(), "request %d", i)
	}
	require.Empty(t, seen.Closes(), "nothing was closed to reselect")

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
}

// TestHopAwayIsTriedAgain: a hop before the endpoint restarts (the failures carry dial.HopAway
// in their status, from another process). Within the limit no try asks for reselection, and
// once the hop is back the same request heals the connection, closing nothing.
func TestHopAwayIsTriedAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sock := socket(t)
	nse := startEndpoint(t, ctx, sock)
	nsc, seen := newClient(ctx, ctx, sock, heal.WithReselectAfter(2), heal.WithBackoff(time.Millisecond, 5*time.Millisecond),
		heal.WithHopAwayLimit(time.Hour))

	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	nse.away.set.Store(true)
	nse.sinks.report(nse.rec.Requests()[0].GetConnection(), networkservice.State_DOWN)
	require.Eventually(t, func() bool { return len(seen.Requests()) >= 8 }, 10*time.Second, time.Millisecond)
	nse.away.set.Store(false)
	require.Eventually(t, func() bool { return len(nse.rec.Requests()) == 2 }, 10*time.Second, time.Millisecond)

	for i, r := range seen.Requests() {
		require.NotEqual(t, networkservice.State_RESELECT_REQUESTED, r.GetConnection().GetState(), "request %d", i)
		require.Equal(t, "nse-1", r.GetConnection().GetNetworkServiceEndpointName(), "request %d", i)
	}
	require.Empty(t, seen.Closes(), "nothing was closed to reselect")

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
}

// TestHopAwayPastTheLimitReselects: a hop before the endpoint that stays away longer than the
// limit is taken for gone, and its failures count toward reselection as any other.
func TestHopAwayPastTheLimitReselects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sock := socket(t)
	nse := startEndpoint(t, ctx, sock)
	nsc, seen := newClient(ctx, ctx, sock, heal.WithReselectAfter(2), heal.WithBackoff(time.Millisecond, 5*time.Millisecond),
		heal.WithHopAwayLimit(0))

	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	nse.away.set.Store(true)
	nse.sinks.report(nse.rec.Requests()[0].GetConnection(), networkservice.State_DOWN)
	require.Eventually(t, func() bool { return len(seen.Requests()) >= 4 }, 10*time.Second, time.Millisecond)
	require.Equal(t, networkservice.State_RESELECT_REQUESTED, seen.Requests()[3].GetConnection().GetState(),
		"two tries failed, the third reselects")

	nse.away.set.Store(false)
	_, _ = nsc.Close(ctx, conn)
}

func TestLivenessCheckFailureReselects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fake := clock.NewFake(time.Now())
	ctx = clock.WithClock(ctx, fake)
	sock := socket(t)
	nse := startEndpoint(t, ctx, sock)
	var alive atomic.Bool
	alive.Store(true)
	var checks atomic.Int32
	nsc, seen := newClient(ctx, ctx, sock,
		heal.WithLivenessInterval(time.Second),
		heal.WithLivenessCheck(func(ctx context.Context, conn *networkservice.Connection) bool {
			checks.Add(1)
			_, hasDeadline := ctx.Deadline()
			return hasDeadline && conn.GetId() != "" && alive.Load()
		}))

	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	fake.Advance(time.Second)
	require.Eventually(t, func() bool { return checks.Load() == 1 && fake.Pending() >= 1 }, 10*time.Second, time.Millisecond)
	require.Len(t, seen.Requests(), 1, "a passing check changes nothing")

	alive.Store(false)
	fake.Advance(time.Second)
	require.Eventually(t, func() bool { return len(nse.rec.Requests()) == 2 }, 10*time.Second, time.Millisecond)
	c := seen.Requests()[1].GetConnection()
	require.Equal(t, networkservice.State_RESELECT_REQUESTED, c.GetState())
	require.Empty(t, c.GetNetworkServiceEndpointName())
	require.Len(t, nse.rec.Closes(), 1, "the old path is closed first")
	require.Len(t, nse.rec.Open(), 1)

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
}

func TestCloseStopsHealing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fake := clock.NewFake(time.Now())
	ctx = clock.WithClock(ctx, fake)
	sock := socket(t)
	nse := startEndpoint(t, ctx, sock)
	nsc, seen := newClient(ctx, ctx, sock)

	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	nse.stop()
	// The first try goes at once; the second waits for the (fake) backoff.
	require.Eventually(t, func() bool { return len(seen.Requests()) == 2 && fake.Pending() == 1 }, 10*time.Second, time.Millisecond)

	_, _ = nsc.Close(ctx, conn)
	require.Zero(t, fake.Pending(), "Close stops the pending try")
	fake.Advance(time.Hour)
	require.Len(t, seen.Requests(), 2)
}

func TestHealStopsWithChainContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fake := clock.NewFake(time.Now())
	sock := socket(t)
	nse := startEndpoint(t, ctx, sock)
	healCtx, stopHeal := context.WithCancel(ctx)
	nsc, seen := newClient(ctx, healCtx, sock)

	conn, err := nsc.Request(clock.WithClock(ctx, fake), request())
	require.NoError(t, err)
	stopHeal()
	nse.stop()
	fake.Advance(time.Hour)
	require.Zero(t, fake.Pending(), "no try is scheduled")
	require.Len(t, seen.Requests(), 1, "nothing heals after heal's context is done")
	_, _ = nsc.Close(ctx, conn)
}

func TestNeedsBegin(t *testing.T) {
	c := next.NewNetworkServiceClient(metadata.NewClient(), heal.NewClient(context.Background()))
	require.PanicsWithValue(t, "heal: no begin before this element in the chain", func() {
		_, _ = c.Request(context.Background(), request())
	})
	require.PanicsWithValue(t, "heal.NewClient: nil ctx", func() {
		var ctx context.Context
		heal.NewClient(ctx)
	})
}

func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Case{
		Name:    "heal",
		Client:  func(ctx context.Context) networkservice.NetworkServiceClient { return heal.NewClient(ctx) },
		Request: request,
	})
}

// failing fails the next n Requests as a hop before the endpoint does while it restarts.
type failing struct{ n atomic.Int32 }

func (f *failing) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if f.n.Add(-1) >= 0 {
		return nil, dial.MarkHopAway(status.Error(codes.Unavailable, "the forwarder is restarting"))
	}
	return next.Server(ctx).Request(ctx, req)
}

func (f *failing) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// TestMetricsCountAHeal: a DOWN, two tries that fail, a third that heals: one heal started,
// three tries by code, one duration, not reselected.
func TestMetricsCountAHeal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	provider, reader := metrictest.Provider(t)
	sock := socket(t)
	nse := startEndpoint(t, ctx, sock)
	fail := &failing{}
	rec := checks.NewServer()
	nsc := next.NewNetworkServiceClient(
		updatepath.NewClient("nsc"),
		begin.NewClient(),
		metadata.NewClient(),
		heal.NewClient(ctx, heal.WithMeterProvider(provider)),
		adapters.NewServerToClient(fail),
		adapters.NewServerToClient(rec),
		clienturl.NewClient(&url.URL{Scheme: "unix", Path: sock}),
		dial.NewClient(ctx, dial.WithIdleTimeout(0)),
		monitor.NewClient(ctx, monitor.WithIdleTimeout(0)),
		connect.NewClient(),
	)
	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)

	fail.n.Store(2)
	nse.sinks.report(nse.rec.Requests()[0].GetConnection(), networkservice.State_DOWN)
	require.Eventually(t, func() bool { return len(rec.Requests()) == 2 }, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return len(metrictest.Collect(t, reader)) == 4 }, 10*time.Second, time.Millisecond)
	require.Equal(t, map[string]int64{
		"vwire.heal.starts{nsm.network_service=ns}":                                 1,
		"vwire.heal.tries{nsm.network_service=ns,rpc.grpc.status_code=UNAVAILABLE}": 2,
		"vwire.heal.tries{nsm.network_service=ns,rpc.grpc.status_code=OK}":          1,
		"vwire.heal.duration{nsm.network_service=ns,vwire.heal.reselected=false}":   1,
	}, metrictest.Collect(t, reader))

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
}
